"""The command line: settings from flags, config files and the environment; --help; exit statuses."""

from __future__ import annotations

import importlib
import importlib.metadata
import re

import pyarrow as pa
import pytest
import yaml

from jobs import embed as embed_job
from jobs.cli import COMMANDS
from jobs.cli import main as cli
from jobs.command import Command, parse, parser
from jobs.errors import BUG, NO_PERMISSION, TRY_LATER, WRONG_COMMAND, exit_code
from pipeline.embed.run import IndexNotBuilt
from pipeline.retrieval.index_store import IndexBehind, NoIndex
from pipeline.service.config import SECRET_MASK, ServeConfig
from pipeline.storage_errors import AccessDenied, StorageOutage
from pipeline.tables import ConcurrentRunError
from vitmae.errors import InvalidInput, NotFound

# Every command with the flags it needs; the values need not exist, since parsing reads nothing.
REQUIRED = {
    "embed": ["--input", "in/", "--output", "out/", "--model", "m"],
    "history": ["--run", "r"],
    "index": ["--run", "r"],
    "search": ["--run", "r", "--path", "p.jpg"],
    "anomalies": ["--run", "r"],
    "duplicates": ["--run", "r"],
    "serve": ["--run", "r"],
    "pretrain": ["--input", "in/", "--output", "out/", "--preset", "tiny"],
    "reconstruct": ["--model", "m", "--images", "[a.jpg]", "--png", "x.png"],
    "demo": [],
}
# Settings other than the defaults, nested ones among them, for the round trip through a config file.
CHANGED = {
    "embed": [
        "--infer.mask_ratio",
        "0.75",
        "--index.index_type",
        "hnsw",
        "--extensions",
        "[jpg,png]",
        "--overwrite",
        "true",
        "--storage.endpoint",
        "http://127.0.0.1:9000",
        "--decode.mode",
        "exact",
        "--batch_size",
        "16",
    ],
    "history": ["--limit", "3", "--json", "true"],
    "index": ["--index.memory_budget_gb", "0.5", "--rebuild", "true"],
    "search": ["--k", "5", "--png", "s.png"],
    "anomalies": ["--by", "knn", "--top", "7", "--exact_top", "0"],
    "duplicates": ["--threshold", "0.9", "--storage.retry_seconds", "5"],
    "serve": ["--port", "0", "--load_model", "false"],
    "pretrain": ["--epochs", "2", "--flip", "false", "--decode.max_pixels", "1000"],
    "reconstruct": ["--mask_ratio", "0.5", "--seed", "3"],
    "demo": ["--epochs", "1", "--workdir", "elsewhere"],
}


def command(name: str) -> Command:
    return importlib.import_module(COMMANDS[name][0]).COMMAND


def test_every_command_is_listed_and_parses():
    assert set(REQUIRED) == set(COMMANDS) == set(CHANGED)
    for name in COMMANDS:
        settings, debug = parse(command(name), REQUIRED[name])
        assert isinstance(settings, command(name).settings) and debug is False


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_every_settings_default(name):
    text = parser(command(name)).format_help()
    assert "Unvalidated" not in text  # every field's type resolved, so values are checked as they parse
    entries = re.split(r"\n  ARG:   ", text)[1:]
    options = [entry for entry in entries if not re.match(r"(-h|--config|--print_config|--debug|--\w+ CONFIG)", entry)]
    assert len(options) >= 3
    for entry in options:
        flat = " ".join(entry.split())
        assert "default:" in flat or "required" in flat, flat
        assert re.search(r"ENV: VITMAE_[A-Z_]+", flat), flat  # and the environment variable beside it


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_printed_settings_given_back_as_a_config_make_the_same_settings(name, tmp_path, capsys):
    argv = [*REQUIRED[name], *CHANGED[name]]
    assert cli([name, *argv, "--print_config"]) == 0
    printed = capsys.readouterr().out
    yaml.safe_load(printed)  # a YAML file
    (tmp_path / "settings.yaml").write_text(printed)
    assert parse(command(name), ["--config", str(tmp_path / "settings.yaml")]) == parse(command(name), argv)


def test_flags_after_a_config_file_win_and_the_environment_gives_way_to_both(tmp_path, monkeypatch):
    (tmp_path / "nightly.yaml").write_text(
        "input: s3://photos/\noutput: s3://runs/\nmodel: m\ninfer:\n  mask_ratio: 0.75\n"
    )
    monkeypatch.setenv("VITMAE_EMBED_INFER__MASK_RATIO", "0.5")
    monkeypatch.setenv("VITMAE_EMBED_BATCH_SIZE", "32")
    settings, _ = parse(embed_job.COMMAND, ["--config", str(tmp_path / "nightly.yaml")])
    assert (settings.infer.mask_ratio, settings.batch_size, settings.input) == (0.75, 32, "s3://photos/")
    settings, _ = parse(embed_job.COMMAND, ["--config", str(tmp_path / "nightly.yaml"), "--infer.mask_ratio", "0.6"])
    assert settings.infer.mask_ratio == 0.6
    settings, _ = parse(embed_job.COMMAND, ["--input", "i", "--output", "o", "--model", "m"])
    assert (settings.infer.mask_ratio, settings.batch_size) == (0.5, 32)


def test_the_token_is_never_printed_and_its_mask_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITMAE_SERVE_TOKEN", "s3cret-token")
    settings, _ = parse(command("serve"), ["--run", "r"])
    assert settings.secret == "s3cret-token" and "s3cret" not in repr(settings)
    assert cli(["serve", "--run", "r", "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "s3cret" not in printed and f"token: '{SECRET_MASK}'" in printed
    (tmp_path / "serve.yaml").write_text(printed)
    monkeypatch.delenv("VITMAE_SERVE_TOKEN")
    assert cli(["serve", "--config", str(tmp_path / "serve.yaml")]) == WRONG_COMMAND  # jsonargparse refuses it
    assert 'Parser key "token"' in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="token is the mask that --print_config writes"):  # and from Python
        ServeConfig(run="r", token=SECRET_MASK)


def test_version_and_the_list_of_commands(capsys):
    assert cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vitmae-pipeline {importlib.metadata.version('vitmae-pipeline')}"
    assert cli(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"    {name}" in listed for name in COMMANDS) and "75 try again later" in listed
    assert cli(["nonsense"]) == WRONG_COMMAND


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--input", "i", "--output", "o", "--model", "m", "--no_such", "1"], "unrecognized arguments: --no_such 1"),
        (["--input", "i", "--output", "o", "--model", "m", "--batch_size", "x"], 'Parser key "batch_size"'),
        (["--input", "i", "--output", "o", "--model", "m", "--infer.pooling", "max"], 'Parser key "infer.pooling"'),
        (["--output", "o", "--model", "m"], "give exactly one of input and input_list"),
        (
            ["--input", "i", "--input_list", "l", "--output", "o", "--model", "m"],
            "give exactly one of input and input_list",
        ),
        (["--input", "i", "--output", "o", "--model", "m", "--config", "/no/such.yaml"], "/no/such.yaml"),
    ],
)
def test_a_wrong_command_is_one_line_and_status_2(argv, expected, capsys):
    assert cli(["embed", *argv]) == WRONG_COMMAND
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitmae embed: error: ") and expected in err and len(err.splitlines()) == 1, err


# Each row of the README's exit-status table, as the command ends on the error its run raises.
@pytest.mark.parametrize(
    "raised, status",
    [
        (InvalidInput("mask_ratio must be in [0, 1)"), WRONG_COMMAND),
        (NotFound("--input s3://b/p: no such folder, prefix or file"), WRONG_COMMAND),
        (AccessDenied("s3://b/out: the store refused the credentials"), NO_PERMISSION),
        (StorageOutage("the storage stayed unreachable for 120 s"), TRY_LATER),
        (ConcurrentRunError("two runs on one output at once are refused"), TRY_LATER),
        (NoIndex("r has no index"), TRY_LATER),
        (IndexBehind("the index of r reflects version 3"), TRY_LATER),
        (pa.ArrowInvalid("No match for FieldRef.Name(width)"), BUG),  # a library's ValueError is no user mistake
        (ValueError("an internal check"), BUG),
        (FileNotFoundError("a file the code expected"), BUG),
    ],
)
def test_exit_statuses(raised, status, monkeypatch, capsys):
    def fail(config):
        raise raised

    monkeypatch.setattr(embed_job, "run", fail)
    assert cli(["embed", *REQUIRED["embed"]]) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(raised) in err
    assert ("internal error" in err and "--debug" in err) == (status == BUG), err


@pytest.mark.parametrize(
    "cause, status",
    [
        (StorageOutage("the storage stayed unreachable"), TRY_LATER),
        (InvalidInput("index_type flat needs about 3 GB"), WRONG_COMMAND),
        (RuntimeError("faiss failed"), BUG),
    ],
)
def test_an_index_not_built_ends_as_its_cause_says(cause, status):
    try:
        raise IndexNotBuilt("the tables are updated, but the index could not be") from cause
    except IndexNotBuilt as err:
        assert exit_code(err) == status
