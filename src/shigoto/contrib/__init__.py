"""Integrations with other libraries, each behind an optional extra: `prometheus`
(`shigoto.contrib.prometheus`), `otel` (`shigoto.contrib.opentelemetry`)."""
