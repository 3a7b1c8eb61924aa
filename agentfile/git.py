"""Git for isolation: the only module that imports GitPython.

Metadata changes (worktrees, branches, merges) are serialised by one lock: git's own lock
files would otherwise make concurrent targets fail at random. Merges are computed with
`git merge-tree --write-tree` and recorded with `commit-tree` + `update-ref`, so checking and
making a merge never touches any work tree.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from agentfile.errors import AgentfileError, UsageError
from agentfile.run.spawn import signals_held

_LOCK = threading.RLock()
# What tools leave that is never a change of anyone's (Python's caches): not committed when
# untracked, whether or not the repository's .gitignore names them.
CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
CACHE_SUFFIXES = (".pyc", ".pyo")
# Who commits when git knows no one: a machine without user.name/user.email (CI, a container).
FALLBACK_NAME, FALLBACK_EMAIL = "agentfile", "agentfile@localhost"
MERGE_SUBJECT = "agentfile: merge "  # how the scheduler's merges of targets' branches begin


def _no_auto_maintenance() -> dict[str, str]:
    """`-c maintenance.auto=false` as environment, after any GIT_CONFIG_* the user set: a
    target's commit does not run `git maintenance run --auto` after it (15 ms per target on
    tmpfs, more on disk, and a gc it starts would repack beside the other targets' commits);
    the user's own next commit, merge or fetch runs it."""
    count = os.environ.get("GIT_CONFIG_COUNT", "0")
    n = int(count) if count.isdigit() else 0
    return {"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": "maintenance.auto",
            f"GIT_CONFIG_VALUE_{n}": "false"}


class CommitFailed(AgentfileError):
    """git could not commit a target's work (a full disk): it is still where it was."""


class CheckoutFailed(AgentfileError):
    """git could not switch the checkout (an untracked file in the way, a missing branch)."""


class NotAWorktree(UsageError):
    """A folder agentfile made as a worktree that git no longer knows as one."""


class _OwnSessionGit(git.Git):
    """git commands in a session of their own: a Ctrl-C at the terminal (or a signal to
    agentfile's process group) reaches agentfile, which stops the build in order, never a
    git command half way (a commit of an agent's work killed by the user's signal)."""

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("start_new_session", True)
        with signals_held():  # until it is out of agentfile's group, and after
            return super().execute(command, *args, **kwargs)


class _Repo(git.Repo):
    GitCommandWrapperType = _OwnSessionGit


def _repo(path: Path) -> git.Repo:
    # A path is a path: a target named ü has %C3%BC in its worktree's path, which
    # GitPython would take for a %VARIABLE% (and warn on stderr).
    return _Repo(path, expand_vars=False)


def git_said(err: Exception) -> str:
    """What a failed git command said, in one line (its last line of stderr)."""
    lines = str(getattr(err, "stderr", "") or "").splitlines()
    said = [ln.strip().removeprefix("stderr: ").strip("'").strip() for ln in lines]
    said = [ln for ln in said if ln and not ln.endswith(":")]  # "error: …: " says nothing
    return said[-1] if said else str(err)


@dataclass(frozen=True, slots=True)
class MergeResult:
    clean: bool
    commit: str | None = None  # the new tip of the integration branch
    conflicts: tuple[str, ...] = ()


class Git:
    """One repository, driven through the git command line by GitPython."""

    def __init__(self, root: Path) -> None:
        try:
            self.repo = _repo(root)
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise UsageError(f"{root} is not a git repository; worktree and branch isolation "
                             "need one (or use `isolation = none`)") from None
        self.root = Path(self.repo.working_tree_dir or root)
        self.cmd = self.repo.git
        self._identity: dict[str, str] | None = None
        self._common: Path | None = None  # the repository's git dir, shared by its worktrees

    def identity(self) -> dict[str, str]:
        """The environment agentfile's commits are made with: empty when git knows who the
        user is (GIT_AUTHOR_*/GIT_COMMITTER_*, then the repository's, global and system
        config, as git itself looks), so the commits are the user's; agentfile's name only
        for a role git would have to guess."""
        if self._identity is None:
            self._identity = {}
            for role in ("AUTHOR", "COMMITTER"):
                status, _, _ = self.cmd.execute(
                    ["git", "-c", "user.useConfigOnly=true", "var", f"GIT_{role}_IDENT"],
                    with_extended_output=True, with_exceptions=False)
                if status != 0:
                    self._identity |= {f"GIT_{role}_NAME": FALLBACK_NAME,
                                       f"GIT_{role}_EMAIL": FALLBACK_EMAIL}
        return self._identity

    # -- facts --------------------------------------------------------------------------

    def head_commit(self) -> str:
        try:
            return str(self.cmd.rev_parse("--verify", "HEAD"))
        except GitCommandError:
            raise UsageError("the repository has no commit yet; worktree isolation starts "
                             "from one (make a first commit)") from None

    def current_branch(self) -> str | None:
        try:
            return str(self.cmd.symbolic_ref("--short", "-q", "HEAD"))
        except GitCommandError:
            return None  # detached

    def switched_from(self, branch: str) -> str | None:
        """Where the checkout was when it last switched to `branch` (a branch, or a commit
        when it was detached), from HEAD's reflog: "checkout: moving from X to BRANCH"."""
        try:
            said = str(self.cmd.reflog("show", "--format=%gs", "-n", "200", "HEAD"))
        except GitCommandError:
            return None
        for line in said.splitlines():
            found = re.fullmatch(r"checkout: moving from (\S+) to (\S+)", line)
            if found and found.group(2) == branch:
                return found.group(1)
        return None

    def dirty_files(self, path: Path | None = None, *, untracked: bool = False) -> list[str]:
        """Changed tracked files of a work tree (and untracked ones, not ignored, if asked)."""
        try:
            repo = _repo(path) if path else self.repo
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise NotAWorktree(f"{path} is no longer a git worktree (its .git, or git's "
                               "record of it, is gone): what is in it cannot be checked"
                               ) from None
        out = repo.git.status("--porcelain=v1", "-z",
                              "--untracked-files=all" if untracked else "--untracked-files=no")
        entries = [e for e in str(out).split("\0") if e]
        files: list[str] = []
        skip = False
        for entry in entries:
            if skip:
                skip = False
                continue
            files.append(entry[3:])
            skip = entry[0] in "RC"  # a rename is followed by its old name
        return files

    def branch_exists(self, name: str) -> bool:
        try:
            self.cmd.rev_parse("--verify", "--quiet", f"refs/heads/{name}")
        except GitCommandError:
            return False
        return True

    def rev(self, ref: str) -> str:
        return str(self.cmd.rev_parse("--verify", ref))

    def is_ancestor(self, commit: str, of: str) -> bool:
        try:
            self.cmd.merge_base("--is-ancestor", commit, of)
        except GitCommandError:
            return False
        return True

    def not_in(self, commits: Iterable[str], of: str) -> set[str]:
        """The commits that `of` does not contain (one git call for all of them)."""
        wanted = set(commits)
        if not wanted:
            return set()
        try:
            listed = set(str(self.cmd.rev_list(*sorted(wanted), f"^{of}")).split())
        except GitCommandError:  # one of them is gone: ask one by one
            return {c for c in wanted if not self.is_ancestor(c, of)}
        return wanted & listed

    def merged_anywhere(self, branch: str) -> bool:
        """Every commit of the branch is contained in some other branch, but agentfile's own
        merges (its work is not lost): a dead build's integration branch, whose targets' work
        a later build merged again, holds nothing of its own."""
        out = str(self.cmd.log("--format=%P%x09%s", branch, "--not", f"--exclude={branch}",
                               "--branches"))
        for line in out.splitlines():
            parents, _, subject = line.partition("\t")
            if len(parents.split()) < 2 or not subject.startswith(MERGE_SUBJECT):
                return False
        return True

    def checked_out(self) -> dict[str, Path]:
        """Each branch checked out in some worktree (the main checkout included): where."""
        found: dict[str, Path] = {}
        path: Path | None = None
        for line in str(self.cmd.worktree("list", "--porcelain")).splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line.startswith("branch refs/heads/") and path is not None:
                found[line.removeprefix("branch refs/heads/")] = path
        return found

    def diff(self, base: str, tip: str) -> str:
        return str(self.cmd.diff(f"{base}..{tip}"))

    def create_branch(self, name: str, at: str) -> None:
        with _LOCK:
            self.cmd.branch(name, at)

    def delete_branch(self, name: str) -> None:
        with _LOCK:
            self.cmd.branch("-D", name)

    def add_worktree(self, path: Path, branch: str, at: str) -> None:
        """A new worktree at `path` on a new branch `branch` starting at `at`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with _LOCK:
            if self.branch_exists(branch):  # queued again: carry on from its own work
                self.cmd.worktree("add", "-q", str(path), branch)
            else:
                self.cmd.worktree("add", "-q", "-b", branch, str(path), at)

    def remove_worktree(self, path: Path) -> None:
        with _LOCK:
            if path.exists():
                try:
                    self.cmd.worktree("remove", "--force", str(path))
                except GitCommandError:
                    if self._is_worktree(path):
                        raise
                    # Half removed behind git's back (its .git gone): git no longer knows
                    # the folder as a worktree; its files go, and git forgets it.
                    shutil.rmtree(path)
                    self.cmd.worktree("prune")
            else:  # removed behind git's back: forget its metadata
                self.cmd.worktree("prune")

    # -- pooled worktrees (isolation/pool.py): reset in place instead of made again -----------

    def linked_git_dir(self, path: Path) -> str:
        """The git dir of the linked worktree at `path`, if it is one of this repository's;
        NotAWorktree otherwise. Commands in it name that git dir and work tree outright: git
        searching upward from a damaged worktree would find, and reset, the main checkout."""
        try:
            pointer = (path / ".git").read_text().strip()
        except OSError:
            raise NotAWorktree(f"{path} has no .git file") from None
        gitdir = path / pointer.removeprefix("gitdir:").strip()  # relative (git 2.48's
        # worktree.useRelativePaths) or absolute: `/` keeps the absolute one as it is
        if self._common is None:
            self._common = Path(str(self.cmd.rev_parse("--path-format=absolute",
                                                       "--git-common-dir"))).resolve()
        common = self._common
        try:
            back = gitdir / (gitdir / "gitdir").read_text().strip()
        except OSError:
            raise NotAWorktree(f"git keeps no record of the worktree {path}") from None
        if gitdir.parent.resolve() != common / "worktrees" or \
                back.parent.resolve() != path.resolve():
            raise NotAWorktree(f"{path} is not a worktree of {self.root}")
        return str(gitdir.resolve())

    def _in_tree(self, path: Path, *args: str) -> None:
        gitdir = self.linked_git_dir(path)
        self.cmd.execute(["git", "-C", str(path), f"--git-dir={gitdir}",
                          f"--work-tree={path}", *args])

    def add_detached_worktree(self, path: Path, at: str) -> None:
        """A new worktree at `path`, detached at `at` (a pooled one, before its first use)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with _LOCK:
            self.cmd.worktree("add", "-q", "--detach", str(path), at)

    def reset_worktree(self, path: Path, branch: str, at: str) -> None:
        """Put the worktree at `path` on `branch` (made at `at` unless it exists: queued again,
        it carries on from its own work), its tracked files as that commit has them and its
        untracked files that git does not ignore removed; ignored files stay."""
        with _LOCK:  # refs are shared by every worktree: made one at a time
            if not self.branch_exists(branch):
                self.cmd.branch(branch, at)
        self._in_tree(path, "checkout", "-q", "-f", branch)
        self._in_tree(path, "clean", "-q", "-f", "-f", "-d")

    def detach_worktree(self, path: Path) -> None:
        """Leave the branch of the worktree at `path`, for the scheduler to merge and delete:
        HEAD detached at the same commit, files untouched (the next target's reset puts them
        right; a checkout here would stat every file once more)."""
        self._in_tree(path, "update-ref", "--no-deref", "-m", "agentfile: back to the pool",
                      "HEAD", "HEAD")

    @staticmethod
    def _is_worktree(path: Path) -> bool:
        try:
            _repo(path)
        except (InvalidGitRepositoryError, NoSuchPathError):
            return False
        return True

    def prune_worktrees(self) -> None:
        with _LOCK:
            self.cmd.worktree("prune")

    def commit_all(self, path: Path, message: str, *,
                   exclude: Sequence[str] = ()) -> str | None:
        """Commit everything changed in a worktree (but `exclude`, e.g. a copied `.env`);
        the new commit, or None if there was nothing to commit. CommitFailed if git could
        not (a full disk): the work is then still there, uncommitted."""
        try:
            return self._commit_all(path, message, exclude)
        except GitCommandError as err:
            raise CommitFailed(f"git could not commit it ({git_said(err)})") from None

    def _commit_all(self, path: Path, message: str, exclude: Sequence[str]) -> str | None:
        tree = _repo(path)
        exclude = [*exclude, *caches(untracked_files(path))]
        if exclude:  # git refuses to be told to leave out what it ignores anyway (a .env)
            ignored = set(str(tree.git.check_ignore(*exclude, with_exceptions=False))
                          .splitlines())
            exclude = [name for name in exclude if name not in ignored]
        tree.git.add("-A", "--", ".", *(f":(exclude){name}" for name in exclude))
        status, _, _ = tree.git.diff("--cached", "--quiet", with_extended_output=True,
                                     with_exceptions=False)
        if status == 0:
            return None  # nothing staged
        with tree.git.custom_environment(**self.identity(), **_no_auto_maintenance()):
            tree.git.commit("-q", "--no-verify", "-m", message)
        return str(tree.git.rev_parse("HEAD"))

    def keep_head_on(self, path: Path, branch: str) -> str:
        """Make `branch` hold the commit the checkout at `path` is on, and return it: an
        agent that detached HEAD or switched branches committed its work there, and the
        target's branch is what gets merged (else that work would be left dangling)."""
        head = str(_repo(path).git.rev_parse("HEAD"))
        if head != self.rev(branch):
            with _LOCK:
                self.cmd.branch("-f", branch, head)
        return head

    def merge_into(self, branch: str, into: str, message: str) -> MergeResult:
        """Merge `branch` into `into` without touching any work tree; conflicts change nothing."""
        with _LOCK:
            ours, theirs = self.rev(into), self.rev(branch)
            if self.is_ancestor(theirs, ours):
                return MergeResult(True, ours)
            if self.is_ancestor(ours, theirs):
                self.cmd.update_ref(f"refs/heads/{into}", theirs, ours)
                return MergeResult(True, theirs)
            status, out, err = self.cmd.merge_tree(
                "--write-tree", "--name-only", "-z", ours, theirs,
                with_extended_output=True, with_exceptions=False)
            fields = str(out).split("\0")
            if status == 1:  # conflicts: the tree, then the conflicted names, then ""
                names = []
                for name in fields[1:]:
                    if not name:
                        break
                    names.append(name)
                return MergeResult(False, conflicts=tuple(dict.fromkeys(names)))
            if status != 0:
                raise UsageError(f"git merge-tree failed: {err}")
            tree = fields[0].strip()
            with self.repo.git.custom_environment(**self.identity()):
                commit = str(self.cmd.commit_tree(tree, "-p", ours, "-p", theirs,
                                                  "-m", message))
            self.cmd.update_ref(f"refs/heads/{into}", commit, ours)
            return MergeResult(True, commit)

    def squash(self, branch: str, onto: str, message: str) -> str:
        """One new commit on `onto` holding `branch`'s tree (its work, squashed); returned,
        no branch moved."""
        with self.repo.git.custom_environment(**self.identity()):
            return str(self.cmd.commit_tree(f"{branch}^{{tree}}", "-p", onto, "-m", message))

    # -- bundles: commits carried to and from other machines, no shared filesystem ----------

    @classmethod
    def cache(cls, path: Path) -> Git:
        """A bare repository at `path`, made if missing: a node's copy of a coordinator's
        commits, which worktrees are added to."""
        if not (path / "HEAD").exists():
            git.Repo.init(path, bare=True, mkdir=True)
        return cls(path)

    def has_commit(self, commit: str) -> bool:
        status, _, _ = self.cmd.cat_file("-e", f"{commit}^{{commit}}",
                                         with_extended_output=True, with_exceptions=False)
        return bool(status == 0)

    def bundle(self, path: Path, ref: str, *, excluding: str | None = None) -> str:
        """Write the commits of `ref` (but those `excluding` has) to a bundle file at `path`;
        the commit `ref` named then."""
        with _LOCK:  # a merge moves the ref: the commit returned is the one bundled
            tip = self.rev(ref)
            self.cmd.bundle("create", "-q", str(path), ref,
                            *([f"^{excluding}"] if excluding else []))
        return tip

    def fetch_bundle(self, path: Path, ref: str, into: str) -> None:
        """Fetch `ref` from a bundle file into the ref `into` (moved if it existed)."""
        with _LOCK:
            self.cmd.fetch("-q", str(path), f"+{ref}:{into}")

    def set_ref(self, ref: str, commit: str) -> None:
        """Point the ref `ref` at `commit` (made if missing, moved if it existed)."""
        with _LOCK:
            self.cmd.update_ref(ref, commit)

    def checkout_new(self, branch: str, at: str) -> None:
        """Switch the main work tree to a new branch at `at` (branch isolation)."""
        with _LOCK:
            self.cmd.checkout("-q", "-b", branch, at)

    def restore_checkout(self, ref: str) -> None:
        """Back to the user's branch, files included; what the target left is committed."""
        with _LOCK:
            try:
                self.cmd.checkout("-q", "-f", ref)
            except GitCommandError as err:
                raise CheckoutFailed(f"git checkout {ref}: {git_said(err)}") from None

    def fast_forward(self, branch: str) -> bool:
        """Fast-forward the checked-out branch of the main work tree to `branch`."""
        with _LOCK:
            try:
                self.cmd.merge("--ff-only", "-q", branch)
            except GitCommandError:
                return False
            return True


def untracked_files(path: Path) -> set[str]:
    """The files of a work tree that git neither tracks nor ignores."""
    out = _repo(path).git.ls_files("--others", "--exclude-standard", "-z")
    return {name for name in str(out).split("\0") if name}


def caches(names: Iterable[str]) -> list[str]:
    """Of these files, the caches among them: their cache folders (`src/__pycache__`),
    else the files (`a.pyc`)."""
    found: set[str] = set()
    for name in names:
        parts = name.split("/")
        folder = next((i for i, part in enumerate(parts[:-1]) if part in CACHE_DIRS), None)
        if folder is not None:
            found.add("/".join(parts[:folder + 1]))
        elif name.endswith(CACHE_SUFFIXES):
            found.add(name)
    return sorted(found)


def remove_new_files(path: Path, before: set[str]) -> list[str]:
    """Remove the untracked files of a work tree that were not there `before` (and the
    folders that leaves empty): what a check left behind. Ignored files stay."""
    gone = sorted(untracked_files(path) - before)
    for name in gone:
        target = path / name
        target.unlink(missing_ok=True)
        folder = target.parent
        while folder != path and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return gone
