"""`trl-sdar compare SPEC`: several methods × seeds from the same starting model on the same environment setting,
every trained model evaluated on one pinned manifest, and a comparison written to the spec's output folder.

    <output_dir>/runs/<method>/seed<k>/   one `trl-sdar train` run each (recipe.yaml, train.log, compare_eval.json)
    <output_dir>/base/compare_eval.json   the starting model, evaluated once
    <output_dir>/summary.json             per method and seed, per method (mean ± std over seeds), time ratios
    <output_dir>/results.md               the same as tables; plots/ holds the overlaid figures

The spec format is in `spec.py` and the shipped ones in recipes/compare/; a killed comparison continues where it
stopped (runner.py).
"""
