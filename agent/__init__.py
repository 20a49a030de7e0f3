"""poco-im-agent: drive Poco agent sessions from Telegram and DingTalk."""

__version__ = "0.1.0"

__all__ = ["__version__"]
