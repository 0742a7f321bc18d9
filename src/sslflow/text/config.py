"""Typed view of the `text` group of params.yaml (the text track), validated once at the stage boundary.

Like sslflow.config: unknown keys fail, types are not coerced, each default lives here only.
"""

from typing import Literal

from pydantic import Field, model_validator

from sslflow.config import Optim, Section, Select, Train


class UnlabeledSource(Section):
    """One entry of `text.fetch.unlabeled`: text for MLM pretraining (and the tokenizer) only, never labeled."""

    source: Literal["bbc-news", "text", "jsonl", "csv", "conll"]  # text: one document per line
    path: str | None = None  # text / jsonl / csv / conll file; null for bbc-news (embedded)
    text_column: str = "text"  # jsonl / csv: the document (jsonl: a string or a list of tokens)
    token_index: int = 0  # conll: column of the token

    @model_validator(mode="after")
    def _path_fits_source(self):
        if (self.path is None) != (self.source == "bbc-news"):
            raise ValueError("path must name a file, except for source bbc-news (path: null)")
        return self


class TextFetch(Section):
    source: Literal["bbc-news", "csv", "jsonl", "conll", "hf"] = "bbc-news"
    path: str | None = None  # csv / jsonl / conll file
    text_column: str = "text"  # csv / jsonl / hf: the document, or (token-classification) the token list
    label_column: str = "label"  # csv / jsonl / hf: the document label, or the tag list
    token_index: int = 0  # conll: column of the token
    tag_index: int = -1  # conll: column of the IOB tag
    dataset: str | None = None  # hf: dataset name for datasets.load_dataset
    subset: str | None = None  # hf: its configuration name
    split: str = "train"  # hf: which split to read
    unlabeled: list[UnlabeledSource] = []  # extra pretraining text; texts overlapping a labeled one are dropped
    # labels given by people (text-classification): a CSV (id,label) or a Label Studio JSON export, a file or folder
    # inside text/labels/; read by the label stage only, so new labels never rerun fetch, preprocess or pretrain
    labels: str | None = "labels"


class TextPreprocess(Section):
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    vocab_size: int = Field(4000, ge=100)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool | None = None  # null: by task, lowercased for documents, cased for NER (bench/ner.md)
    max_length: int = Field(128, ge=8)  # tokens per sequence, [CLS] and [SEP] included
    stride: int = Field(16, ge=0)  # tokens shared by consecutive chunks of one long text

    @model_validator(mode="after")
    def _stride_fits(self):
        if self.stride >= self.max_length - 2:
            raise ValueError("stride must be smaller than max_length - 2")
        return self


class BertSize(Section):
    hidden_size: int = Field(128, gt=0)
    layers: int = Field(2, gt=0)
    heads: int = Field(2, gt=0)
    intermediate_size: int = Field(512, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.heads:
            raise ValueError("hidden_size must be a multiple of heads")
        return self


class TextPretrain(Section):
    method: Literal["mlm"] = "mlm"
    # A local BERT masked-LM checkpoint directory (save_pretrained, with its tokenizer): preprocess uses its
    # tokenizer and pretrain continues from its weights (sslflow.text.pretrained); `model` is then unused.
    init_from: str | None = None
    epochs: int = Field(50, gt=0)
    batch_size: int = Field(32, gt=1)
    max_steps: int | None = Field(3000, gt=0)  # the learning-rate schedule ends here (or after `epochs`)
    mlm_probability: float = Field(0.25, gt=0, lt=1)
    model: BertSize = BertSize(dropout=0.0)
    optim: Optim = Optim(lr=2e-3, weight_decay=0.01, warmup_epochs=1)
    train: Train = Train()


class TextFixMatch(Section):
    """Consistency training (Sohn et al., 2020) on token ids, continued from the supervised fine-tuned model.
    The views are sslflow.text.views: weak = [MASK] in place of `weak_mask` of the tokens; strong = delete
    `strong_delete` of them, then [MASK] in place of `strong_mask` of the rest."""

    steps: int = Field(300, gt=0)
    mu: int = Field(2, gt=0)  # pool sequences per labeled sequence in a step
    threshold: float = Field(0.9, gt=0, lt=1)  # tau: confidence a weak view needs to give a pseudo-label
    weight: float = Field(1.0, gt=0)  # lambda: weight of the unlabeled loss
    weak_mask: float = Field(0.1, ge=0, lt=1)  # fractions of the non-special tokens
    strong_mask: float = Field(0.3, ge=0, lt=1)
    strong_delete: float = Field(0.1, ge=0, lt=1)


class TextFinetune(Section):
    method: Literal["supervised", "fixmatch"] = "supervised"  # fixmatch: text-classification only
    labels_per_class: int | None = Field(10, gt=0)  # token-classification: labeled sentences
    label_fraction: float | None = Field(None, gt=0, le=1)
    label_seed: int = 0
    steps: int = Field(200, gt=0)  # optimizer steps, whatever the budget's size
    epochs: int | None = Field(None, gt=0)  # when set: epochs over the labeled sequences instead of `steps`
    batch_size: int = Field(16, gt=0)
    optim: Optim = Optim(lr=1e-3, weight_decay=0.01)
    encoder_lr_scale: float = Field(0.3, ge=0)
    classical_c: float = Field(10.0, gt=0)
    # token-classification: word tag probabilities -> IOB2 tags (sslflow.text.decode); saved with the models
    decoding: Literal["argmax", "viterbi"] = "viterbi"
    # token-classification: the ssl model is the per-word tagger on the classical features plus this many word
    # classes learned by the encoder (sslflow.text.wordclasses); null: fine-tune the encoder as a token classifier
    word_classes: int | None = Field(50, gt=1)
    fixmatch: TextFixMatch = TextFixMatch()

    @model_validator(mode="after")
    def _one_budget(self):
        # both null: the labels of text.fetch.labels that fall in the train split (what people labeled)
        if self.labels_per_class is not None and self.label_fraction is not None:
            raise ValueError("set at most one of labels_per_class and label_fraction (null both: text.fetch.labels)")
        return self


class TextEvaluate(Section):
    pr_points: int = Field(101, gt=1)


class Text(Section):
    task: Literal["text-classification", "token-classification"] = "text-classification"
    fetch: TextFetch = TextFetch()
    preprocess: TextPreprocess = TextPreprocess()
    pretrain: TextPretrain = TextPretrain()
    finetune: TextFinetune = TextFinetune()
    evaluate: TextEvaluate = TextEvaluate()
    select: Select = Select()  # the pool texts to label next (stages/text/propose.py), as the image track's

    @model_validator(mode="after")
    def _ner_is_supervised(self):
        if self.finetune.method != "supervised" and self.task != "text-classification":
            raise ValueError(
                f"'text.finetune.method' is {self.finetune.method}, but text.task is {self.task}: token "
                "classification (NER) fine-tunes supervised only"
            )
        return self
