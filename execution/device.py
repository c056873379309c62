"""The device: asks for a plan, receives and unpacks the head, runs it, sends the cut tensor.

Every stage is timed with one monotonic clock (server and device share it on one host, which
is how the shaped link runs them): ship = HELLO sent to the last head byte received, less the
server's planning and packing time; up = cut tensor handed to the socket to the server having
it; head and tail compute as each side measures them; end to end from the input to the
result received.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from execution.codec import act_frame, tensor_from_frame
from execution.frames import MAX_PAYLOAD, Frame, FrameError, Kind, json_frame, read_frame
from execution.models import SplitModel, load_split_model
from execution.pacing import Pacer, send
from system.errors import QsplitInputError
from system.plan import Plan


@dataclass
class DeviceRun:
    """What one device measured for one request and its N inputs."""

    plan: dict
    bytes_up: int = 0
    bytes_down: int = 0
    head_bytes: int = 0
    head_payload_bytes: list[int] = field(default_factory=list)  # per head tensor
    head_tensor_bits: list[int] = field(default_factory=list)
    head_tensor_elems: list[int] = field(default_factory=list)
    act_bytes: int = 0  # one cut-tensor frame, header included
    act_payload_bytes: int = 0
    prep_s: float = 0.0
    ship_s: float = 0.0
    head_s: list[float] = field(default_factory=list)
    up_s: list[float] = field(default_factory=list)
    tail_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)  # per input: head start to result
    preds: list[int] = field(default_factory=list)
    unpack_s: float = 0.0  # unpacking the head into the model (after it arrived)
    t_hello: float = 0.0  # monotonic clock: HELLO handed to the socket
    t_send: list[float] = field(default_factory=list)  # monotonic clock: each cut tensor sent

    def to_dict(self) -> dict:
        return asdict(self)


class _Counted:
    """Counts the bytes a device reads through its stream."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, f: Frame) -> Frame:
        self.n += f.wire_bytes
        return f


def _check(f: Frame, kind: Kind) -> Frame:
    if f.kind == Kind.ERROR:
        raise QsplitInputError(f"server: {f.json().get('error', 'error')}")
    if f.kind != kind:
        raise FrameError(f"expected {kind.name} from the server, got {f.kind.name}")
    return f


async def run_device(
    host: str,
    port: int,
    model: SplitModel | str,
    request: dict,
    inputs: torch.Tensor,
    plan: Plan | None = None,
    timeout_s: float = 30.0,
    add_half_rtt: bool = True,
    up_pacer_bps: float | None = None,
    max_payload: int = MAX_PAYLOAD,
) -> DeviceRun:
    """Run ``inputs`` (N x input shape) through the plan the server gives (or ``plan``)."""
    m = model if isinstance(model, SplitModel) else load_split_model(model, trained=False)
    rtt_half = float(request.get("rtt_ms", 0.0)) / 2000.0 if add_half_rtt else 0.0
    pacer = Pacer(up_pacer_bps) if up_pacer_bps else None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        raise QsplitInputError(f"server {host}:{port}: cannot connect ({exc or 'timeout'})") from None
    rx = _Counted()
    try:
        hello = json_frame(
            Kind.HELLO, {"model": m.name, "request": request, "plan": plan.to_json_dict() if plan else None}
        )
        t0 = time.monotonic()
        await send(writer, hello, pacer)
        up = len(hello)
        pf = rx.add(_check(await read_frame(reader, timeout_s, max_payload), Kind.PLAN)).json()
        run = DeviceRun(plan=pf["plan"], prep_s=float(pf.get("prep_s", 0.0)), t_hello=t0)
        got = Plan(
            cut=int(pf["plan"]["cut"]),
            weight_bits=tuple(pf["plan"]["weight_bits"]),
            act_bits=int(pf["plan"]["act_bits"]),
        ).validate(m.n_units)
        tensors = m.head_tensors(got.cut)
        if int(pf.get("n_tensors", -1)) != len(tensors):
            raise FrameError(
                f"head: {pf.get('n_tensors')} tensors announced, the model's head has {len(tensors)}"
            )
        received = [
            rx.add(_check(await read_frame(reader, timeout_s, max_payload), Kind.TENSOR)) for _ in tensors
        ]
        await asyncio.sleep(rtt_half)
        run.ship_s = time.monotonic() - t0 - run.prep_s
        run.head_bytes = rx.n
        t1 = time.perf_counter()
        for (i, name, t), f in zip(tensors, received, strict=True):
            val = tensor_from_frame(f, tuple(t.shape), f"head unit {i} {name}")
            with torch.no_grad():
                t.copy_(val)
            run.head_payload_bytes.append(len(f.payload))
            run.head_tensor_bits.append(f.bits)
            run.head_tensor_elems.append(int(t.numel()))
        run.unpack_s = time.perf_counter() - t1
        m.run(0, got.cut, torch.zeros((1, *m.input_shape)))  # warm: the times compared are warm
        L = m.n_units
        in_bits = m.profile.input_bits
        for x in inputs:
            ts = time.monotonic()
            h = x.unsqueeze(0)
            t1 = time.perf_counter()
            h = m.run(0, got.cut, h)
            run.head_s.append(time.perf_counter() - t1)
            if got.cut == L:
                run.preds.append(int(h.argmax(1)))
                run.e2e_s.append(time.monotonic() - ts)
                continue
            frame = act_frame(h, in_bits if got.cut == 0 else got.act_bits)
            run.act_bytes, run.act_payload_bytes = len(frame), len(frame) - 64
            t_send = time.monotonic()
            run.t_send.append(t_send)
            await send(writer, frame, pacer)
            up += len(frame)
            res = rx.add(_check(await read_frame(reader, timeout_s, max_payload), Kind.RESULT))
            t_end = time.monotonic()
            logits = np.frombuffer(res.payload, dtype="<f4")
            run.preds.append(int(np.argmax(logits)))
            run.up_s.append(res.f0 - t_send)
            run.tail_s.append(res.f1)
            run.e2e_s.append(t_end - ts)
        if got.cut < L:
            bye = json_frame(Kind.BYE, {})
            await send(writer, bye, pacer)
            up += len(bye)
        run.bytes_up, run.bytes_down = up, rx.n
        return run
    except ConnectionResetError as exc:
        raise QsplitInputError(f"server closed the connection ({exc})") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
