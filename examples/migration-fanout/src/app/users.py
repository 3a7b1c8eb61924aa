from legacy_log import write_log


def deactivate(user_id: str, reason: str) -> None:
    write_log("INFO", f"deactivating user {user_id} ({reason})")
