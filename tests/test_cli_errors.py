"""``cli_errors``: the nearest valid name, where a key was given, the line that replaces a parser message."""

from pathlib import Path

from madm_pl.cli_errors import Origin, config_files, explain, find_origin, nearest_key, nearest_name


def test_nearest_name_by_spelling_or_initials() -> None:
    options = ["lr", "head_lr_multiplier", "weight_decay", "classmix", "dplg_t0", "ema_max_alpha"]
    assert nearest_name("class_mix", options) == "classmix"
    assert nearest_name("dplg_tt0", options) == "dplg_t0"
    assert nearest_name("learning_rate", options) == "lr"  # lr is its initials
    assert nearest_name("wd", options) == "weight_decay"  # and the other way round
    assert nearest_name("temperature", options) is None


def test_nearest_key_prefers_the_same_group_then_the_same_name() -> None:
    keys = ["trainer.max_steps", "trainer.max_epochs", "checkpoint.monitor", "progress_bar.every_n_steps"]
    assert nearest_key("trainer.max_step", keys) == "trainer.max_steps"
    assert nearest_key("max_steps", keys) == "trainer.max_steps"  # no group given
    assert nearest_key("checkpoint.monitorr", keys) == "checkpoint.monitor"
    assert nearest_key("trainer.nonsense", keys) is None


def test_origin_is_the_last_argument_else_the_last_file_with_its_line(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  init_args:\n    lr: 0.1\n    class_mix: true\n")
    task = tmp_path / "task.yaml"
    task.write_text("config: base.yaml\ndata.init_args.batch_size: 3\n")
    args = ["-c", str(task), "--model.init_args.lr=1", "--model.lr=2"]
    assert config_files(args) == [base, task]  # the included file is read first
    assert find_origin("model.init_args.lr", args) == Origin(argument="--model.lr=2", value="2")
    assert find_origin("model.init_args.class_mix", args) == Origin(file=base, line=4, value="True")
    assert find_origin("data.init_args.batch_size", args) == Origin(file=task, line=2, value="3")
    assert find_origin("trainer.max_steps", args) == Origin()
    assert find_origin("trainer.max_steps", ["--trainer.max_steps", "7"]).argument == "--trainer.max_steps 7"


def test_an_unknown_message_keeps_its_text_without_the_given_value() -> None:
    message = "Something new:\n  it went wrong\n  Given value: Namespace(a=1)"
    assert explain(message, None, [], "madm-pl fit") == "Something new:; it went wrong"
