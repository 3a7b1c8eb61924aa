from legacy_log import write_log


def charge(order_id: str, cents: int) -> bool:
    write_log("INFO", f"charging order {order_id}: {cents} cents")
    if cents <= 0:
        write_log("WARN", "refusing non-positive charge for " + order_id)
        return False
    return True
