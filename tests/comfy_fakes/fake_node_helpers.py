"""Fake of ComfyUI's node_helpers: conditioning_set_values (what FluxGuidance uses), same signature as 0.3.64."""


def conditioning_set_values(conditioning, values={}, append=False):
    """A copy of `conditioning` ([[cond, options], ...]) with `values` set in every options dict (added to an
    existing value when `append`)."""
    def merged(options):
        return {**options, **{key: (options[key] + value if append and options.get(key) is not None else value)
                              for key, value in values.items()}}
    return [[cond, merged(options)] for cond, options in conditioning]
