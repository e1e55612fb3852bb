"""The applications: one module or package per `trl-sdar` command (train, eval, sft, compare, plot), the recipe
parsing and accelerate hand-off they share (`recipe/`), and the environment set-up they share (`environments.py`).

Layers, imported one way only: `trl_sdar.cli` → `trl_sdar.commands` → `trl_sdar.agent` → `trl_sdar.method`,
`trl_sdar.envs`, `trl_sdar.skills`; `trl_sdar.models` resolves model names for the commands. Nothing imports the CLI.
"""
