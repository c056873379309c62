"""The edge server: holds the fp32 models, plans each request, ships heads, runs tails.

Why asyncio: one process serves many devices at once, and every read has a timeout, so a
device that stalls, disconnects mid-frame or sends garbage costs its own connection only.
Each failure is answered with one ERROR frame (one line) and logged as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field

import torch

from execution.codec import act_from_frame, head_frames
from execution.deciders import Decider, plan_from_json
from execution.frames import MAX_PAYLOAD, FrameError, Kind, encode, json_frame, read_frame
from execution.models import SplitModel, load_split_model
from execution.pacing import Pacer, send
from system.errors import QsplitInputError
from system.plan import Plan
from system.request import request_from_json_dict

_BAD_INPUT = (QsplitInputError, TimeoutError, ConnectionError, OSError)


@dataclass
class ServerConfig:
    decider: Decider
    read_timeout_s: float = 30.0
    add_half_rtt: bool = True  # the receiver adds rtt/2 (no netem on this kernel)
    allow_device_plan: bool = True  # a HELLO may name its own plan (still validated)
    down_pacer_bps: float | None = None  # pace downlink writes (no namespaces)
    max_payload: int = MAX_PAYLOAD


@dataclass
class Server:
    config: ServerConfig
    models: dict[str, SplitModel] = field(default_factory=dict)
    head_cache: dict[tuple[str, int, tuple[int, ...]], list[bytes]] = field(default_factory=dict)
    served: int = 0
    failures: list[str] = field(default_factory=list)

    def model(self, name: object) -> SplitModel:
        if not isinstance(name, str):
            raise QsplitInputError("model: expected a model name")
        if name not in self.models:
            self.models[name] = load_split_model(name, trained=True)
        return self.models[name]

    def head(self, m: SplitModel, plan: Plan) -> list[bytes]:
        """The packed head of ``plan`` (cached per model, cut and weight bits)."""
        key = (m.name, plan.cut, plan.weight_bits)
        if key not in self.head_cache:
            self.head_cache[key] = head_frames(m.head_tensors(plan.cut), plan.weight_bits)
        return self.head_cache[key]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await self._session(reader, writer)
            self.served += 1
        except ConnectionResetError as exc:
            self._fail(peer, f"device disconnected ({exc})", writer, tell=False)
        except (*_BAD_INPUT, ValueError) as exc:
            self._fail(peer, " ".join(str(exc).splitlines()) or type(exc).__name__, writer)
        finally:
            with contextlib.suppress(Exception):  # the peer may be gone already
                await asyncio.wait_for(writer.drain(), 2.0)
            writer.close()

    def _fail(self, peer: object, msg: str, writer: asyncio.StreamWriter, tell: bool = True) -> None:
        self.failures.append(msg)
        print(f"server: {peer}: {msg}", file=sys.stderr, flush=True)
        if tell and not writer.is_closing():
            writer.write(json_frame(Kind.ERROR, {"error": msg}))

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.config
        pacer = Pacer(cfg.down_pacer_bps) if cfg.down_pacer_bps else None
        hello = await read_frame(reader, cfg.read_timeout_s, cfg.max_payload)
        if hello.kind != Kind.HELLO:
            raise FrameError(f"expected HELLO first, got {hello.kind.name}")
        t0 = time.monotonic()
        msg = hello.json()
        m = self.model(msg.get("model"))
        req = request_from_json_dict(msg.get("request"), "request")
        half_rtt = req.rtt_s / 2.0 if cfg.add_half_rtt else 0.0
        if msg.get("plan") is not None and cfg.allow_device_plan:
            plan = plan_from_json(msg["plan"], m.n_units)
        else:
            plan = cfg.decider(m.profile, req)
        frames = self.head(m, plan)
        m.run(plan.cut, m.n_units, torch.zeros(m.cut_shape(plan.cut)))  # warm the tail
        prep_s = time.monotonic() - t0  # planning and packing: not link time
        await asyncio.sleep(half_rtt)
        out = [
            json_frame(Kind.PLAN, {"plan": plan.to_json_dict(), "n_tensors": len(frames), "prep_s": prep_s}),
            *frames,
        ]
        await send(writer, b"".join(out), pacer)
        L = m.n_units
        if plan.cut >= L:
            return
        a_bits = m.profile.input_bits if plan.cut == 0 else plan.act_bits
        shape = m.cut_shape(plan.cut)
        while True:
            f = await read_frame(reader, cfg.read_timeout_s, cfg.max_payload)
            if f.kind == Kind.BYE:
                return
            if f.kind != Kind.ACT:
                raise FrameError(f"expected ACT or BYE, got {f.kind.name}")
            await asyncio.sleep(half_rtt)
            t_recv = time.monotonic()
            x = act_from_frame(f, shape, a_bits)
            t1 = time.perf_counter()
            y = m.run(plan.cut, L, x)
            tail_s = time.perf_counter() - t1
            res = encode(
                Kind.RESULT,
                y.contiguous().numpy().astype("<f4").tobytes(),
                bits=32,
                shape=tuple(y.shape),
                f0=t_recv,
                f1=tail_s,
            )
            await send(writer, res, pacer)


async def serve(server: Server, host: str, port: int) -> asyncio.base_events.Server:
    """Start listening; the returned asyncio server's ``sockets`` give the bound port."""
    return await asyncio.start_server(server.handle, host, port)


def main_server(
    host: str, port: int, config: ServerConfig, ready_file: str | None = None, preload: tuple[str, ...] = ()
) -> int:
    """Run until interrupted (``python -m execution server``); ``preload`` models load first."""
    torch.set_num_threads(1)
    server = Server(config)
    for name in preload:
        server.model(name)

    async def run() -> None:
        srv = await serve(server, host, port)
        bound = srv.sockets[0].getsockname()[1]
        print(f"server: listening on {host}:{bound}", flush=True)
        if ready_file:
            from pathlib import Path

            Path(ready_file).write_text(str(bound))
        async with srv:
            await srv.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0
