"""Build a tiny random-weight Llama with a locally trained BPE tokenizer, for vLLM tests offline."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

#: Bump when the builder's output changes in a way its parameters do not show.
BUILDER_VERSION = 1
_MARKER = "sluice-tiny-model.json"

#: A plain chat template: one block per turn, the static turns first, so a shared system
#: prompt renders to the same leading bytes on every request (what the prefix cache needs).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_WORDS = (
    "the a an one every some this that request model token cache prefix budget queue worker "
    "engine batch lane price cost ledger team feature user answer question prompt system "
    "fast slow cheap dear small large first last next same other new old good plain simple "
    "is was are were will can may must should would runs sends reads writes pays waits "
    "stops starts keeps counts serves routes shares holds gives takes makes finds "
    "and or but so then because when while if after before with without from into over "
    "under about between through per each all many few more less most least"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    """What the builder makes; its fingerprint names the cache folder, so a change rebuilds."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4  # head size 32: one of the sizes vLLM's CPU attention supports
    max_position_embeddings: int = 2048
    vocab_size: int = 1536
    corpus_sentences: int = 6000
    seed: int = 0
    dtype: str = "bfloat16"  # what vLLM on CPU runs anyway; float32 weights get cast, noisily

    def fingerprint(self) -> str:
        """A short hash of every parameter and the builder version."""
        blob = json.dumps({"builder": BUILDER_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_model_dir(root: str | os.PathLike[str] = ".sluice/models",
                      spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """The folder for ``spec`` under ``root``, named by its fingerprint so builds are reused."""
    return Path(root) / f"tiny-llama-{spec.fingerprint()}"


def is_built(out_dir: str | os.PathLike[str], spec: TinyModelSpec = TinyModelSpec()) -> bool:
    """True when ``out_dir`` already holds a complete build of ``spec``."""
    marker = Path(out_dir) / _MARKER
    try:
        return json.loads(marker.read_text("utf-8")).get("fingerprint") == spec.fingerprint()
    except (OSError, ValueError):
        return False


def build_tiny_model(out_dir: str | os.PathLike[str],
                     spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write the model and tokenizer to ``out_dir`` (skipped when already built); return the path.

    The build goes to a sibling temp folder that is renamed into place at the end, so an
    interrupted build never leaves a half-written model that a later run would trust; a lock
    file makes two processes starting together build it once.
    """
    import fcntl

    out = Path(out_dir).resolve()
    if is_built(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_built(out, spec):
            _build(out, spec)
    return out


def _build(out: Path, spec: TinyModelSpec) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = _train_tokenizer(spec)
        tokenizer.save_pretrained(tmp)
        _save_model(tmp, spec, vocab_size=len(tokenizer),
                    bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                    pad=tokenizer.pad_token_id)
        (tmp / _MARKER).write_text(json.dumps(
            {"fingerprint": spec.fingerprint(), "spec": asdict(spec)}, indent=2), "utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the model is not a secret
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _corpus(spec: TinyModelSpec) -> list[str]:
    # Seeded, so the same spec trains the same merges and the fingerprint stays honest.
    rng = random.Random(spec.seed)
    onsets = "b c d f g h k l m n p r s t v w z st tr pl gr".split()
    vowels, codas = "aeiou", "nrstlm"
    # Made-up words on top of the plain ones give BPE enough distinct merges for ~1.5k tokens.
    coined = ["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(("", *codas))
                      for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    lines = []
    for _ in range(spec.corpus_sentences):
        words = [rng.choice(_WORDS) if rng.random() < 0.6 else rng.choice(coined)
                 for _ in range(rng.randint(4, 16))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice((".", ".", "?", "!")))
    return lines


def _train_tokenizer(spec: TinyModelSpec):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(spec), trainer=trainer)
    bos = tok.token_to_id("<s>")
    # Llama-style: a completion prompt starts with <s>; chat prompts carry no extra BOS.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=spec.max_position_embeddings)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _save_model(out: Path, spec: TinyModelSpec, *, vocab_size: int, bos: int, eos: int,
                pad: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings, bos_token_id=bos,
        eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=False)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).to(getattr(torch, spec.dtype))
    model.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m ops.gpu.tiny_model OUT_DIR``: build (or confirm) the tiny model there."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ops.gpu.tiny_model OUT_DIR", file=sys.stderr)
        return 2
    path = build_tiny_model(args[0])
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
