#!/usr/bin/env python3
"""Seconds per training step of the PyTorch peer's standard skip network on a CUDA GPU.

Imports the network builder (skip_net) from a copy of the peer script given with --peer, and
times the step that `dip bench --device cuda` times: forward, MSE loss, backward, Adam (lr 0.01)
on a random SIZExSIZE target with a fixed input (no per-step input noise, as dip bench). Each
step is timed with CUDA events after warm-up steps; the median is printed.

  torch_cuda_time.py --peer path/to/torch_dip.py --sizes 256,512 [--iters 20] [--warmup 5] [--tf32]

Prints one line per size: `torch-cuda size=S median_s=... min_s=... max_s=... device=...`.
"""
import argparse
import importlib.util
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, help="path of the peer script (torch_dip.py)")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions")
    ap.add_argument("--channels", type=int, default=3)
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("error: PyTorch finds no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = True
    spec = importlib.util.spec_from_file_location("torch_dip_peer", a.peer)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)

    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev)
    torch.manual_seed(0)
    for size in (int(s) for s in a.sizes.split(",") if s):
        net = peer.skip_net(32, a.channels).to(dev)
        z = (torch.rand(1, 32, size, size) * 0.1).to(dev)
        target = torch.rand(1, a.channels, size, size).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        times = []
        for it in range(a.warmup + a.iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            opt.zero_grad()
            out = net(z)
            loss = torch.nn.functional.mse_loss(out, target)
            loss.backward()
            opt.step()
            end.record()
            end.synchronize()
            if it >= a.warmup:
                times.append(start.elapsed_time(end) / 1000.0)
        print(
            f"torch-cuda size={size} median_s={statistics.median(times):.6f} "
            f"min_s={min(times):.6f} max_s={max(times):.6f} tf32={int(a.tf32)} "
            f"torch={torch.__version__} device={name.replace(' ', '_')}",
            flush=True,
        )
        del net, opt, z, target


if __name__ == "__main__":
    main()
