"""A model written with Agora's typed interface: a pydantic model of the arguments (with a
file and an ``accept`` choice) and plain functions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agora.modelserver.typed import File, TypedModel

_STATE = {"warm": False}


class Args(BaseModel):
    text: str = Field(description="What to echo.")
    times: int = Field(1, ge=1, le=5, description="How many times.")
    attachment: File | None = None
    accept: Literal["application/json", "text/plain"] = "application/json"


class Echo(BaseModel):
    echo: str
    attachment_bytes: int | None
    warm: bool


def warm() -> None:
    _STATE["warm"] = True


def predict(args: Args) -> Echo | str:
    echoed = " ".join([args.text] * args.times)
    if args.accept == "text/plain":
        return echoed
    size = None
    if args.attachment is not None:
        with open(args.attachment.filename, "rb") as f:
            size = len(f.read())
    return Echo(echo=echoed, attachment_bytes=size, warm=_STATE["warm"])


class TrainArgs(BaseModel):
    rounds: int


def train(args: TrainArgs) -> dict[str, int]:
    return {"rounds": args.rounds}


model = TypedModel(predict, warm=warm, train=train, metadata={"description": "Echoes text, typed."})
