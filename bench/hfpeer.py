"""Process environment for the Hugging Face peers (sentence-transformers, transformers).

Import this before numpy / torch / transformers: it drops the OpenBLAS overrides that slow a
current numpy/torch on this machine (bench/run drops them too, so a script run directly gives
the same numbers), keeps the hub offline (the peers read the files `make install` provisioned)
and silences progress bars. `quiet()` turns transformers' own logging down once it is imported.
"""
import os

for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_v, None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # model-loading progress bars
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
