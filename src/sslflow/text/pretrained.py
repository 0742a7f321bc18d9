"""Continued pretraining (domain-adaptive pretraining; Gururangan et al., 2020, "Don't Stop Pretraining"): a
local Hugging Face masked-LM checkpoint and its tokenizer, read offline, in place of the WordPiece and the
weights the pipeline would otherwise learn from nothing.

Only BERT checkpoints fit (BertForMaskedLM, its tokenizer with BERT's special tokens, [PAD] id 0): the MLM
loss, the saved encoder and the fine-tuned heads are BERT's, and fine-tuning takes id 0 for padding.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM
from transformers.utils import logging

from sslflow.errors import SslflowError
from sslflow.text.tokenizer import CLS, MASK, PAD, SEP, UNK

KEY = "text.pretrain.init_from"
ROLES = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}
# config.json entries that describe the file rather than the network: not part of the saved encoder config
METADATA = {"architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path", "model_type"}


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' progress bars and load report off: a misfit is reported once, as our own error."""
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_pretrained(path: Path, max_length: int) -> tuple[BertForMaskedLM, Tokenizer]:
    """The checkpoint's masked-LM model and its tokenizer (as the `tokenizers` object preprocess saves), once
    both are checked to fit the pipeline and each other; a misfit is an SslflowError naming `path`."""
    if not path.is_dir():
        raise SslflowError(f"{path}: no such checkpoint directory (params key '{KEY}')")
    with _quiet():
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as err:  # OSError, ValueError, JSON errors: transformers has no one type for them
            raise SslflowError(f"{path}: not a Hugging Face model directory ({err})") from None
        if config.model_type != "bert":
            raise SslflowError(
                f"{path}: a '{config.model_type}' checkpoint; continued pretraining needs a BERT masked-LM "
                f"checkpoint (BertForMaskedLM)"
            )
        if max_length > config.max_position_embeddings:
            raise SslflowError(
                f"{path}: the model has {config.max_position_embeddings} positions, fewer than params key "
                f"'text.preprocess.max_length' ({max_length}); lower it"
            )
        tokenizer = _tokenizer(path)
        if tokenizer.get_vocab_size() != config.vocab_size:
            raise SslflowError(
                f"{path}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model's embeddings "
                f"{config.vocab_size}; they do not belong together"
            )
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True, output_loading_info=True)
        except Exception as err:
            raise SslflowError(f"{path}: cannot load the model weights ({err})") from None
    missing = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
    if any(key.startswith("cls.") for key in missing):
        raise SslflowError(
            f"{path}: the checkpoint has no masked-LM head (saved from BertModel?); save a BertForMaskedLM"
        )
    if missing:
        raise SslflowError(f"{path}: the checkpoint lacks weights the model needs: {', '.join(missing[:3])}")
    return model, tokenizer


def _tokenizer(path: Path) -> Tokenizer:
    try:
        loaded = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise SslflowError(f"{path}: cannot load its tokenizer ({err})") from None
    if getattr(loaded, "backend_tokenizer", None) is None:
        raise SslflowError(f"{path}: the tokenizer is not a fast one (no tokenizer.json); save a fast tokenizer")
    roles = {role: getattr(loaded, role) for role in ROLES}
    if roles != ROLES or loaded.pad_token_id != 0:
        raise SslflowError(
            f"{path}: the tokenizer's special tokens are {roles} ([PAD] id {loaded.pad_token_id}); the pipeline "
            f"needs BERT's {ROLES} with [PAD] id 0"
        )
    tokenizer = Tokenizer.from_str(loaded.backend_tokenizer.to_str())
    tokenizer.no_truncation()  # texts are cut into chunks by sslflow.text.encode, never by the tokenizer
    tokenizer.no_padding()
    return tokenizer


def encoder_config(model: BertForMaskedLM) -> dict:
    """The BertConfig arguments of the checkpoint's encoder, as sslflow.text.models.build_bert takes them."""
    return {k: v for k, v in model.config.to_diff_dict().items() if k not in METADATA}


def files_sha256(path: Path) -> str:
    """One hash of every file under `path`: its relative name and its bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
