#!/usr/bin/env python3
"""Runs llama.cpp's `convert_hf_to_gguf.py` on the decode benchmark's checkpoint.

    python benches/llama_cpp/convert.py CONVERT_DIR CHECKPOINT_DIR OUT.gguf

CONVERT_DIR is what benches/llama_cpp/build.sh installs (bench-results/llama.cpp/convert: the
converter, its `conversion/` package and `gguf-py/`). The output is a bf16 GGUF without the MTP
tensors (`--no-mtp`).

The benchmark's tokenizer is synthetic, so the converter cannot recognise its pre-tokenizer by the
hash of a test string; it is told the answer instead: `qwen35`, the pre-tokenizer of Qwen3.5 (the
checkpoint's tokenizer.json uses the same split regex). Written to OUT.gguf.tmp, then renamed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    convert_dir, checkpoint, out = (Path(a).resolve() for a in argv)
    if not (convert_dir / "convert_hf_to_gguf.py").is_file():
        print(f"error: {convert_dir}/convert_hf_to_gguf.py not found; run benches/llama_cpp/build.sh", file=sys.stderr)
        return 2
    sys.path[:0] = [str(convert_dir), str(convert_dir / "gguf-py")]
    import conversion.base

    conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen35"
    import convert_hf_to_gguf

    tmp = out.with_name(out.name + ".tmp")
    sys.argv = ["convert_hf_to_gguf.py", str(checkpoint), "--outtype", "bf16", "--no-mtp", "--outfile", str(tmp)]
    convert_hf_to_gguf.main()
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
