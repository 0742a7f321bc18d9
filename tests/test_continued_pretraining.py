"""Continued pretraining from a local checkpoint (text.pretrain.init_from), on a tiny BERT masked-LM checkpoint
that the test builds and saves with save_pretrained: the text stages use its tokenizer and start from its
weights, and a checkpoint that does not fit stops preprocess with one error line naming it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_text_stages import STAGES, TOPICS, file_hashes, run_stage, tiny_conll, tiny_documents, write_params
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertConfig, BertForMaskedLM, BertModel, PreTrainedTokenizerFast

from sslflow.metrics import read as read_metrics

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's, [PAD] id 0


def tiny_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A cased WordPiece (the pipeline's own would be lowercased) trained by `tokenizers` itself."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_checkpoint(directory: Path, model_class=BertForMaskedLM, extra_vocab: int = 0) -> PreTrainedTokenizerFast:
    tokenizer = tiny_tokenizer([" ".join(TOPICS.values()) + " John Mary Anna Smith went to Paris New York Oslo"] * 3)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer) + extra_vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return tokenizer


@pytest.fixture(scope="module", params=["text-classification", "token-classification"])
def continued_project(request, tmp_path_factory):
    project = tmp_path_factory.mktemp("continued")
    tokenizer = save_checkpoint(project / "checkpoint")
    if request.param == "text-classification":
        tiny_documents(project / "data.txt")
        fetch, finetune = {"source": "csv", "path": "data.txt"}, {}
    else:
        tiny_conll(project / "data.txt")
        fetch, finetune = {"source": "conll", "path": "data.txt"}, {"labels_per_class": 5}
    # lr so small that two steps leave the weights where the checkpoint has them, to within 1e-4
    write_params(
        project, task=request.param, fetch=fetch, finetune=finetune,
        pretrain={"init_from": "checkpoint", "max_steps": 2, "optim": {"lr": 1e-7, "warmup_epochs": 0}},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        codes = {stage: run_stage(stage, project, mp) for stage in STAGES}
    assert codes == dict.fromkeys(STAGES, 0)
    return project, tokenizer, request.param


@pytest.mark.slow
def test_pipeline_continues_from_the_checkpoint(continued_project):
    project, tokenizer, task = continued_project
    prepared = Tokenizer.from_file(str(project / "data/prepared/tokenizer.json"))
    assert prepared.get_vocab() == tokenizer.get_vocab()  # the checkpoint's (cased) vocabulary, none trained
    assert "J" in prepared.get_vocab()  # cased, as the pipeline's own (lowercased by default) is not

    encoder = json.loads((project / "models/encoder/encoder.json").read_text())["bert"]
    assert (encoder["hidden_size"], encoder["num_hidden_layers"]) == (32, 2)  # the checkpoint's, not params'
    trained = load_file(str(project / "models/encoder/encoder.safetensors"))
    start = BertForMaskedLM.from_pretrained(project / "checkpoint").bert.state_dict()
    fresh = BertForMaskedLM(BertConfig(**encoder)).bert.state_dict()
    assert set(trained) == set(start)
    for name, weights in trained.items():
        assert torch.allclose(weights, start[name], atol=1e-4), name
    assert not torch.allclose(trained["embeddings.word_embeddings.weight"], fresh["embeddings.word_embeddings.weight"])

    summary = json.loads((project / "reports/pretrain.json").read_text())
    assert summary["init_from"] == "checkpoint" and len(summary["init_from_sha256"]) == 64
    assert np.isfinite(summary["monitor/val_perplexity"])
    metrics = read_metrics(project / "reports")
    assert metrics["ssl"] and all(0 <= v <= 1 for k, v in metrics["ssl"].items() if k.endswith("f1"))

    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = {row["tags.sslflow.stage"]: row for _, row in mlflow.search_runs(search_all_experiments=True).iterrows()}
    assert runs["pretrain"]["tags.sslflow.init_from_sha256"] == summary["init_from_sha256"]
    assert runs["preprocess"]["tags.sslflow.init_from_sha256"] == summary["init_from_sha256"]
    name = "sslflow-text" if task == "text-classification" else "sslflow-ner"
    served = mlflow.pyfunc.load_model(f"models:/{name}@challenger")  # serving as without a checkpoint
    assert len(served.predict(pd.DataFrame({"text": ["the team scored a goal", "John went to Oslo"]}))) == 2


@pytest.fixture(scope="module")
def fetched_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("fetched")
    tiny_documents(project / "docs.csv")
    write_params(project, fetch={"source": "csv", "path": "docs.csv"})
    with pytest.MonkeyPatch.context() as mp:
        assert run_stage("fetch", project, mp) == 0
    return project


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "no such checkpoint directory"),
        ("no head", "no masked-LM head"),
        ("vocab mismatch", "do not belong together"),
    ],
)
def test_checkpoint_that_does_not_fit_stops_preprocess(fetched_project, case, expected, monkeypatch, capsys):
    checkpoint = fetched_project / f"checkpoint-{case.replace(' ', '-')}"
    if case == "no head":
        save_checkpoint(checkpoint, model_class=BertModel)
    elif case == "vocab mismatch":
        save_checkpoint(checkpoint, extra_vocab=7)
    write_params(fetched_project, fetch={"source": "csv", "path": "docs.csv"}, pretrain={"init_from": checkpoint.name})
    before = file_hashes(fetched_project)
    capsys.readouterr()

    assert run_stage("preprocess", fetched_project, monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {checkpoint.name}:") and expected in lines[0], lines
    assert file_hashes(fetched_project) == before
    assert not (fetched_project / "data/prepared").exists()


def test_pretrain_refuses_data_prepared_with_another_tokenizer(tmp_path, monkeypatch, capsys):
    tiny_documents(tmp_path / "docs.csv")
    write_params(tmp_path, fetch={"source": "csv", "path": "docs.csv"})
    assert run_stage("fetch", tmp_path, monkeypatch) == 0 and run_stage("preprocess", tmp_path, monkeypatch) == 0
    save_checkpoint(tmp_path / "checkpoint")
    write_params(tmp_path, fetch={"source": "csv", "path": "docs.csv"}, pretrain={"init_from": "checkpoint"})
    before = file_hashes(tmp_path)
    capsys.readouterr()

    assert run_stage("pretrain", tmp_path, monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data/prepared/tokenizer.json is not the tokenizer of")
    assert "checkpoint; rerun preprocess" in lines[0] and file_hashes(tmp_path) == before
