"""Verify one bug fix: its regression test exists and passes.

Usage: python scripts/verify_fix.py issue-117
Runs the tests in tests/regressions/ whose names contain `issue_117`; pytest exits 5 when
none match, so a fix without a regression test fails verification too.
"""

import subprocess
import sys

issue = sys.argv[1].replace("-", "_")
sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/regressions", "-k", issue]))
