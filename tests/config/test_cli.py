"""`python -m lazydet.config`: print a recipe (with overrides) as YAML or Python."""
from lazydet.config.__main__ import main

from .recipe_tree import standard_tree


def test_cli_prints_yaml_python_and_errors(tmp_path, capsys):
    recipe = str(standard_tree(tmp_path) / "projects/demo/configs/recipe.py")
    assert main([recipe, "train.max_iter=5", "--key", "train.max_iter"]) == 0
    assert capsys.readouterr().out == "5\n"
    assert main([recipe, "--key", "lr_multiplier.scheduler"]) == 0
    assert capsys.readouterr().out.startswith("_target_: torch.optim.lr_scheduler.MultiStepLR\n")
    assert main([recipe, "--key", "optimizer", "--py"]) == 0
    assert "optimizer = L(AdamW)(" in capsys.readouterr().out
    assert main([recipe, "train.max_iterr=5"]) == 2
    assert "error: unknown config key 'train.max_iterr'" in capsys.readouterr().err
