"""The shop API (development entry point: uvicorn app.main:app --reload)."""

import os

from fastapi import FastAPI

app = FastAPI(title="shop")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "database": os.environ.get("DATABASE_URL", "unset").split("@")[-1]}
