"""Fake of ComfyUI's node_helpers: conditioning_set_values (what FluxGuidance uses), same signature as 0.3.64."""


def conditioning_set_values(conditioning, values={}, append=False):
    """Return a copy of `conditioning` ([[cond, options], ...]) with `values` set in every options dict."""
    result = []
    for cond, options in conditioning:
        options = options.copy()
        for key, value in values.items():
            if append and options.get(key) is not None:
                value = options[key] + value
            options[key] = value
        result.append([cond, options])
    return result
