"""The model card (README.md) export.py writes beside the weights: what a reader of a Hugging Face
folder needs to know of a growlength run, from its checkpoint, metrics.jsonl and prepared data."""
import json
from pathlib import Path

LOAD = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{out}")
model = AutoModelForCausalLM.from_pretrained("{out}", dtype="auto")
ids = tok("ROMEO:", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens=100, do_sample=True, top_k=200)[0]))
```"""


def final_losses(run: Path) -> dict:
    """The last eval record's validation loss per length ({} if metrics.jsonl has none)."""
    losses = {}
    try:
        with open(run / "metrics.jsonl", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("kind") == "eval" and isinstance(rec.get("loss"), dict):
                    losses = rec["loss"]
    except OSError:
        pass
    return losses


def corpus_line(config: dict, data_folder) -> str:
    try:
        meta = json.loads((Path(data_folder) / "meta.json").read_text())
        n = meta["documents"]
        return (f"`{meta.get('source') or config.get('data')}`: {n:,} document{'s' * (n != 1)}, "
                f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} validation tokens")
    except (OSError, ValueError, KeyError, TypeError):
        return f"`{config.get('data')}` (its prepared folder was not found)"


def model_card(run: Path, out: Path, ckpt: dict, tok, max_len: int, dtype: str, data_folder) -> str:
    config, shape, state = ckpt["config"], ckpt["model_config"], ckpt["state"]
    base = f"continued from the local folder `{config['init_from']}`" if config.get("init_from") else "from scratch"
    stages = state.get("stage_stats") or {}
    rows = [f"| {T} | {s['steps']:,} | {s['tokens']:,} | {s['seconds']:.0f} |"
            for T, s in sorted(stages.items(), key=lambda kv: int(kv[0]))]
    losses = final_losses(run)
    loss_rows = [f"| {T} | {v:.4f} |" for T, v in sorted(losses.items(), key=lambda kv: int(kv[0]))]
    rope = shape.get("rope_switch", "none")
    rope_text = ("plain RoPE; positions past the trained length extrapolate directly (the paper's choice)"
                 if rope == "none" else f"`--rope-switch {rope}`: at each stage change RoPE is rescaled from "
                 f"length {shape.get('rope_orig_len')} (now s = {shape.get('rope_scale', 1):g})")
    return "\n".join([
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt_neox, growlength]",
        "# license: fill in the license of these weights and of the corpus they were trained on",
        "---",
        f"# {out.name}",
        "",
        f"A GPT-NeoX model ({shape['n_layer']} layers, width {shape['n_embd']}, {shape['n_head']} heads, "
        f"preset `{config.get('preset')}`) trained with growlength (GrowLength: "
        f"short sequences first, the length grown in stages), {base}. Weights: {dtype}.",
        "",
        f"- Corpus: {corpus_line(config, data_folder)}; tokenizer `{tok.name}`.",
        f"- Tokens seen: {state.get('tokens', 0):,} in {state.get('step', 0):,} steps "
        f"({config.get('tokens_per_step')} tokens per step); schedule `{config.get('schedule')}`.",
        f"- Longest context trained: {max_len} (`max_position_embeddings`).",
        f"- RoPE: {rope_text}.",
        "",
        "| stage length | steps | tokens | seconds |", "|---|---|---|---|", *(rows or ["| – | – | – | – |"]),
        "",
        "Final validation loss (nats per token) at each evaluated length:",
        "",
        "| length | loss |", "|---|---|", *(loss_rows or ["| – | (no eval recorded) |"]),
        "",
        "## How to load",
        "",
        LOAD.format(out=out.name),
        "",
    ])
