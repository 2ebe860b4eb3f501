"""`python -m pipeline search | queue | doctor | view`: one module per subcommand (`search`, `queue`, `doctor`,
`view`), each declaring its flags and its `run(args)`; `main` parses and dispatches (`main.main(argv)`);
`exit_codes` are the codes they return; `models` decides which models and backends a search uses (flags, a
resumed run's record, the environment) and `checks` turn each flag into a validated value before any model loads
(asking each part's own `sources`); `workers` and `remote` add the ComfyUI-worker and service backends.

May import every other part of pipeline/ (it is the top); nothing imports it but `pipeline/__main__.py`.
"""
