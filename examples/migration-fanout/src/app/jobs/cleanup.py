from legacy_log import write_log


def purge_sessions(sessions: list[dict], now: float) -> int:
    expired = [s for s in sessions if s["expires_at"] < now]
    for session in expired:
        sessions.remove(session)
    write_log("DEBUG", f"purged {len(expired)} expired sessions")
    return len(expired)
