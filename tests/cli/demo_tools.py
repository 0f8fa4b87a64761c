"""User tools loaded by the CLI tests through `--tools demo_tools:get_weather`."""


def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: City name.
    """
    return f"{city}: 22°C, sunny"
