"""Logging set-up: stdlib logging for everything (Twisted's own log is routed into it)."""

import json
import logging
import sys
import time

from twisted.logger import STDLibLogObserver, globalLogBeginner

from homeserver.config.options import LoggingConfig


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)  # the access log's fields (http/server.py)
        if access is not None:
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    for name, level in config.loggers.items():
        logging.getLogger(name).setLevel(level)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
