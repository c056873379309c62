"""execution/: packing, frames, codec, models, server/device faults, loopback and shaped link."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from execution import frames as fr  # noqa: E402
from execution import packing  # noqa: E402
from execution.codec import act_frame, act_from_frame, tensor_frame, tensor_from_frame  # noqa: E402
from execution.deciders import make_decider, plan_from_json  # noqa: E402
from execution.device import run_device  # noqa: E402
from execution.models import load_split_model  # noqa: E402
from execution.server import Server, ServerConfig, serve  # noqa: E402
from profiling.quantize import quantize_activation, quantize_weight  # noqa: E402
from system.errors import QsplitInputError  # noqa: E402
from system.plan import Plan  # noqa: E402

REQUEST = json.loads(Path("examples/request_lte_nano.json").read_text())
REQUEST_FAST = {**REQUEST, "rtt_ms": 2.0}
MAHIMAHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "traces" / "mahimahi_cellular"


@given(bits=st.sampled_from(packing.PACKED_BITS), data=st.data())
@settings(max_examples=60, deadline=None)
def test_pack_round_trip(bits: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 300))
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    codes = np.array(values, dtype=np.int64)
    blob = packing.pack(codes, bits)
    assert len(blob) == math.ceil(n * bits / 8) == packing.packed_nbytes(n, bits)
    assert np.array_equal(packing.unpack(blob, n, bits), codes)


def test_pack_refuses_out_of_range_and_bad_widths() -> None:
    with pytest.raises(QsplitInputError, match="values must lie in"):
        packing.pack(np.array([8]), 3)
    with pytest.raises(QsplitInputError, match="not one of"):
        packing.pack(np.array([1]), 5)


@given(bits=st.sampled_from(packing.PACKED_BITS), rows=st.integers(1, 6), cols=st.integers(1, 20),
       seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_weight_quantization_error_bound_and_wire_identity(bits: int, rows: int, cols: int,
                                                           seed: int) -> None:
    w = torch.randn((rows, cols), generator=torch.Generator().manual_seed(seed))
    f = fr.decode(tensor_frame(w, bits))
    assert len(f.payload) == math.ceil(rows * cols * bits / 8)
    got = tensor_from_frame(f, (rows, cols), "w")
    assert torch.equal(got, quantize_weight(w, bits))     # the wire gives the calibration's grid
    m = w.abs().amax(dim=1, keepdim=True)
    step = 2 * m / (2**bits - 1)
    assert torch.all((got - w).abs() <= step / 2 + 1e-5 * m)


@given(bits=st.sampled_from(packing.PACKED_BITS), n=st.integers(1, 200), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_activation_quantization_error_bound(bits: int, n: int, seed: int) -> None:
    x = torch.randn((1, n), generator=torch.Generator().manual_seed(seed))
    f = fr.decode(act_frame(x, bits))
    got = act_from_frame(f, (1, n), bits)
    assert torch.equal(got, quantize_activation(x, bits))
    step = max(float(x.max() - x.min()) / (2**bits - 1), 1e-12)
    assert float((got - x).abs().max()) <= step / 2 + 1e-5 * float(x.abs().max())


def test_frame_header_is_fixed_and_bounded() -> None:
    assert fr.HEADER_BYTES == 64
    blob = fr.encode(fr.Kind.ACT, b"\x01\x02", bits=8, shape=(1, 2))
    assert len(blob) == 66 and fr.decode(blob).payload == b"\x01\x02"
    with pytest.raises(fr.FrameError, match="truncated"):
        fr.decode(blob[:-1])
    bad = bytearray(blob)
    bad[-1] ^= 0xFF
    with pytest.raises(fr.FrameError, match="CRC32 mismatch"):
        fr.decode(bytes(bad))
    huge = bytearray(fr.encode(fr.Kind.HELLO, b"{}"))
    huge[52:60] = struct.pack("<Q", 10**12)
    with pytest.raises(fr.FrameError, match="payload_len 1000000000000 bytes is over the limit"):
        fr.parse_header(bytes(huge[:64]))
    wrong = bytearray(blob)
    wrong[52:60] = struct.pack("<Q", 3)
    with pytest.raises(fr.FrameError, match="does not match shape"):
        fr.parse_header(bytes(wrong[:64]))


def test_models_match_their_profiles() -> None:
    for name, L in (("digits_cnn", 9), ("resnet18", 12)):
        m = load_split_model(name, trained=False)
        assert m.n_units == L == m.profile.n_units
        assert [math.prod(s[1:]) for s in m.out_shapes] == list(m.profile.out_elems)


def test_plan_with_bits_outside_the_set_is_refused() -> None:
    with pytest.raises(QsplitInputError, match=r"weight_bits\[0\]: 5 is not in the bit set"):
        plan_from_json({"cut": 2, "weight_bits": [5, 8], "act_bits": 8}, 9)


async def _with_server(fn, **cfg):  # type: ignore[no-untyped-def]
    server = Server(ServerConfig(make_decider("optimal"), **cfg))
    srv = await serve(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        return await fn(port, server)
    finally:
        srv.close()
        await srv.wait_closed()


def _digits_val(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from profiling.digits import load_split

    sp = load_split()
    return sp.x_val[:n], sp.y_val[:n]


def test_loopback_end_to_end_matches_in_process_quantized_run() -> None:
    x, y = _digits_val(30)
    plan = Plan(cut=4, weight_bits=(3, 4, 8, 6), act_bits=4)

    async def go(port: int, server: Server):  # type: ignore[no-untyped-def]
        return await run_device("127.0.0.1", port, "digits_cnn", REQUEST_FAST, x, plan, timeout_s=10)
    run = asyncio.run(_with_server(go))
    assert run.plan == plan.to_json_dict()
    # same plan in one process through profiling's quantizers
    from profiling.chain import Chain

    m = load_split_model("digits_cnn", trained=True)
    chain = Chain(m.units, x, y)
    ok = chain._correct_vec(plan, None)
    assert int(ok.sum()) == int((torch.tensor(run.preds) == y).sum())
    # payload bytes: each tensor's packed codes are its bits / 8, rounded up
    for nb, bits, n in zip(run.head_payload_bytes, run.head_tensor_bits, run.head_tensor_elems, strict=True):
        assert nb == math.ceil(n * bits / 8)
    assert run.act_payload_bytes == math.ceil(64 * 4 * 4 * 4 / 8)


def _hello(plan: dict | None = None) -> bytes:
    return fr.json_frame(fr.Kind.HELLO, {"model": "digits_cnn", "request": REQUEST_FAST, "plan": plan})


async def _raw(port: int, data: bytes, close: bool = True, read: bool = True) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    if close:
        w.write_eof()
    out = await asyncio.wait_for(r.read(), 10) if read else b""
    w.close()
    return out


def _error_of(blob: bytes) -> str:
    k = 0
    while k < len(blob):
        n_side = struct.unpack("<I", blob[k + 48:k + 52])[0]
        f = fr.decode(blob[k:k + fr.HEADER_BYTES + 4 * n_side + struct.unpack("<Q", blob[k + 52:k + 60])[0]])
        if f.kind == fr.Kind.ERROR:
            return f.json()["error"]
        k += f.wire_bytes
    return ""


def test_faults_each_one_line_and_eight_devices_served() -> None:
    x, _ = _digits_val(5)
    plan = Plan(cut=4, weight_bits=(4, 4, 8, 8), act_bits=8)

    async def go(port: int, server: Server):  # type: ignore[no-untyped-def]
        errs = {}
        errs["bits"] = _error_of(await _raw(port, _hello({"cut": 1, "weight_bits": [5], "act_bits": 8})))
        huge = _hello()[:52] + struct.pack("<QI", 10**12, 0)
        errs["huge"] = _error_of(await _raw(port, huge))
        bad = bytearray(_hello())
        bad[-2] ^= 0x55
        errs["crc"] = _error_of(await _raw(port, bytes(bad)))
        errs["truncated"] = _error_of(await _raw(port, _hello()[:-5]))
        # a cut tensor of the wrong shape after a good handshake
        good = _hello(plan.to_json_dict())
        wrong = act_frame(torch.zeros((1, 32, 4, 4)), 8)
        errs["shape"] = _error_of(await _raw(port, good + wrong))
        # eight devices at once, one of them disconnecting mid-frame
        async def misbehave() -> None:
            await _raw(port, _hello()[:30], close=True, read=False)
        runs = await asyncio.gather(misbehave(), *[
            run_device("127.0.0.1", port, "digits_cnn", REQUEST_FAST, x, plan, timeout_s=10)
            for _ in range(7)])
        await asyncio.sleep(0.2)
        return errs, runs[1:], server
    errs, runs, server = asyncio.run(_with_server(go, read_timeout_s=2.0))
    assert "not in the bit set" in errs["bits"]
    assert "payload_len 1000000000000 bytes is over the limit" in errs["huge"]
    assert "CRC32 mismatch" in errs["crc"]
    assert "truncated" in errs["truncated"]
    assert "differs from the plan's [1, 64, 4, 4]" in errs["shape"]
    assert all("\n" not in e for e in errs.values())
    assert len(runs) == 7 and all(r.preds == runs[0].preds for r in runs)
    assert any("truncated: peer closed after 30 of 64 bytes" in f for f in server.failures)


def test_server_too_slow_gives_a_timeout() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        w.close()

    async def go() -> str:
        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            await run_device("127.0.0.1", port, "digits_cnn", REQUEST_FAST, _digits_val(1)[0], timeout_s=0.5)
        except TimeoutError as exc:
            return str(exc)
        finally:
            srv.close()
        return ""
    msg = asyncio.run(go())
    assert msg == "header: nothing received for 0.5 s (read timeout)"


def test_server_refuses_device_that_stalls() -> None:
    async def go(port: int, server: Server) -> str:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        out = await asyncio.wait_for(r.read(), 10)
        w.close()
        return _error_of(out)
    assert "nothing received for 0.3 s" in asyncio.run(_with_server(go, read_timeout_s=0.3))


@pytest.mark.skipif(not MAHIMAHI.is_dir(), reason="../shared traces absent")
def test_mahimahi_reader() -> None:
    from system.traces import read_mahimahi

    t = read_mahimahi(MAHIMAHI / "TMobile-LTE-short.up", bin_s=1.0, on_zero="floor")
    n_lines = sum(1 for line in (MAHIMAHI / "TMobile-LTE-short.up").read_text().splitlines() if line.strip())
    assert t.direction == "uplink" and t.fmt == "mahimahi"
    assert math.isclose(float(np.sum(t.rate_bps[t.rate_bps > 1e3])) / 8 / 1500, n_lines, rel_tol=1e-9)


def test_mahimahi_repeated_stamps_and_refusals(tmp_path: Path) -> None:
    from system.traces import read_mahimahi

    p = tmp_path / "x.down"
    p.write_text("0\n0\n5\n999\n1000\n")
    t = read_mahimahi(p, bin_s=1.0)
    assert list(t.rate_bps) == [5 * 12000.0]   # the period is 1 s: the last line is its last packet
    p.write_text("5\n3\n")
    with pytest.raises(QsplitInputError, match="line 2"):
        read_mahimahi(p)


def test_link_transfer_integration() -> None:
    from execution.link import transfer_s

    rate = lambda t: 1e6 if (t % 2) < 1 else 3e6  # noqa: E731
    assert math.isclose(transfer_s(rate, 0.5, 0.5e6 + 3e6, 0.1), 1.5, rel_tol=1e-9)


def _netns_ok() -> bool:
    from execution.link import unavailable_reason

    return unavailable_reason() is None


@pytest.mark.skipif(not _netns_ok(), reason="needs root and ip netns")
def test_shaped_link_transfer_and_cleanup() -> None:
    import subprocess

    from execution.link import PREFIX
    from execution.run import execute

    req = {**REQUEST, "up_mbps": 2.0, "down_mbps": 8.0, "rtt_ms": 10.0}
    plan = Plan(cut=7, weight_bits=(8,) * 7, act_bits=8)
    raw = execute("digits_cnn", req, "optimal", 5, "netns", plan=plan, timeout_s=20)
    dev = raw["device"]
    assert raw["mode"] == "netns"
    # the head (~100 kB) through tbf at 8 Mbit/s: bits / rate + rtt, within 15%
    want = 0.010 + dev["head_bytes"] * 8 / 8e6
    assert abs(dev["ship_s"] - want) / want < 0.15
    # the 192-byte cut tensor fits in one packet, which tbf's one-packet bucket lets through
    up = float(np.median(dev["up_s"]))
    assert 0.005 <= up <= 0.005 + (dev["act_bytes"] + 66) * 8 / 2e6 + 0.003
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{PREFIX}{__import__('os').getpid()}" not in left


@pytest.mark.skipif(not _netns_ok(), reason="needs root and ip netns")
def test_leftovers_of_a_killed_run_are_removed() -> None:
    import subprocess

    from execution.link import PREFIX, clean_leftovers

    p = subprocess.Popen(["true"])
    p.wait()
    name = f"{PREFIX}{p.pid}d"
    subprocess.run(["ip", "netns", "add", name], check=True)
    assert name in clean_leftovers()
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not _netns_ok(), reason="needs root and ip netns")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_link_command_leaves_nothing_behind(sig: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    from execution.link import PREFIX, clean_leftovers

    p = subprocess.Popen([sys.executable, "-m", "execution", "link", "--up-mbps", "3", "--down-mbps", "9",
                          "--seconds", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("link: device netns"), p.stderr.read() if p.stderr else ""
    name = f"{PREFIX}{p.pid}"
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    p.send_signal(getattr(signal, sig))
    p.wait(timeout=60)          # cleanup is quick; a loaded 2-core machine is not
    if sig == "SIGKILL":   # nothing ran on exit: the next run removes what it left
        time.sleep(0.1)
        assert f"{name}d" in clean_leftovers()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in left


def test_digits_resnet_runs_as_its_profiles_units() -> None:
    """The second digits network is a model execution can run: its units are the profile's
    (checked on load) and their chain is the trained network on held-out images."""
    import torch

    from execution.models import load_split_model
    from execution.run import model_inputs
    from profiling.digits import load_net

    m = load_split_model("digits_resnet")
    x, y = model_inputs("digits_resnet", 16)
    assert y is not None and m.n_units == m.profile.n_units == 6
    with torch.no_grad():
        assert torch.equal(m.run(0, m.n_units, x), load_net("digits_resnet").eval()(x))
