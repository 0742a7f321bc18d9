"""A WordPiece tokenizer trained here (no download), on the unlabeled pool only (Wu et al., 2016; BERT).

Saved as one `tokenizer.json` (the `tokenizers` format), which is all the logged model needs.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sslflow.errors import SslflowError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in this order


def train_wordpiece(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int, lowercase: bool
) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, SPECIAL.index(CLS)), (SEP, SPECIAL.index(SEP))]
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    if not Path(path).is_file():
        raise SslflowError(f"tokenizer not found: {path}; run the preprocess stage first")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on a malformed file
        raise SslflowError(f"cannot read tokenizer {path}: {err}") from None


def for_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The same tokenizer behind the interface transformers' data collators expect."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
    )
