"""Configuration: a frozen attrs model, and a YAML loader that names the key and line of every problem.

The model is plain data (frozen attrs classes, no validators): code inside the bridge trusts
it. All checking happens at the edge, in the loader, which

* composes the YAML into a node tree (``yaml.compose``) so every value keeps its line number;
* walks the tree section by section, collecting *every* problem into one `ConfigError`
  (``FILE:LINE: key.path: message`` per line) instead of stopping at the first;
* rejects unknown keys at every level, suggesting the nearest known key (difflib);
* resolves secrets from the file, the environment (``*_env``) or a file (``*_file``), wraps them
  in `Secret` at once, and never echoes a secret in a message;
* refuses a config file that holds a secret inline, or a secret file, when group or others
  can read it.

Sections that refer to each other: routes name devices (so ``devices`` loads first and routes
resolve ``device:channels`` against it), and an ESME's ``default_route`` names a route (checked
once every section has loaded). Device kinds are one folder each, bridge/devices/<kind>/.

Adding a section takes three steps: an attrs class with defaults (model.py),
a loader ``load_<name>(ctx, node, path) -> Class`` built on `Map` (look at `load_limits` in
admin.py, the smallest), and one line in `_SECTIONS` (loader.py) plus the matching field on
`Config`.

The modules of this package, one job each:

* ``model.py``: the attrs classes, `Secret`, `FrozenMap` and the constants they use.
* ``reader.py``: the checking engine: `ConfigIssue`, `ConfigError`, `Map` (reads a mapping
  node and reports key, line and expectation).
* ``values.py``: checks several sections share (hosts, file permissions, secret sources).
* ``loader.py``: `load_config`, `load_config_text` and the table of top-level sections.
* one module per section: ``smpp.py`` (listeners, timers, TLS), ``esmes.py``, ``devices.py``
  (the keys every device has, and the public helpers the per-kind loaders in
  ``bridge/devices/<kind>/config.py`` import), ``routes.py``, ``scheduler.py``,
  ``receipts.py``, ``inbound.py``, ``store.py``, ``admin.py`` (admin, logging, limits).
* ``demo.py``: `default_demo_config`.

Import the public names from ``bridge.config``; this file re-exports them.

YAML notes for users, enforced here with specific messages: quote values that YAML would
otherwise turn into something else (``"::1"``, ``"0123"``, ``"on"``, numeric passwords); a key
present with no value is an error, except for a section (a mapping), where it means "all
defaults" so a section whose lines are all commented out still works.
"""

from __future__ import annotations

from .demo import (
    default_demo_config,
)
from .devices import (
    DEVICE_KINDS,
    DEVICE_PASSWORD_KEYS,
    JITTER_MAX,
)
from .loader import (
    load_config,
    load_config_text,
)
from .model import (
    ADMIN_TOKEN_MIN,
    AdminConfig,
    AMBIGUOUS_POLICIES,
    Caps,
    ChannelOverride,
    Config,
    DATA_CODING_1_MODES,
    DEFAULT_OPTIN_KEYWORDS,
    DEFAULT_OPTOUT_KEYWORDS,
    DeviceConfig,
    EsmeConfig,
    FrozenMap,
    GOIP_DONE_CHOICES,
    GOIP_MAX_LINES,
    InboundConfig,
    InboundRoute,
    IPNetwork,
    Limits,
    Listener,
    LOG_FORMATS,
    LOG_LEVELS,
    LoggingConfig,
    LOOPBACK_NETWORKS,
    MO_LONG_MODES,
    NAME_PATTERN,
    OPTOUT_MT_ACTIONS,
    OptoutConfig,
    PduLogConfig,
    RECEIPT_MODES,
    RECEIPT_STATS,
    ReceiptMapping,
    ReceiptsConfig,
    RouteConfig,
    SchedulerConfig,
    Secret,
    SmppConfig,
    StoreConfig,
    SYNCHRONOUS_MODES,
    SYSTEM_ID_MAX,
    Timers,
    TlsConfig,
)
from .reader import (
    ConfigError,
    ConfigIssue,
)
from .receipts import (
    DEVICE_RECEIPT_STATS,
)
from .store import (
    default_store_path,
    STORE_FILE,
    store_location_issues,
    SYSTEM_STATE_DIR,
)

__all__ = [
    "AMBIGUOUS_POLICIES",
    "AdminConfig",
    "Caps",
    "ChannelOverride",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DEVICE_KINDS",
    "DeviceConfig",
    "EsmeConfig",
    "FrozenMap",
    "GOIP_DONE_CHOICES",
    "InboundConfig",
    "InboundRoute",
    "IPNetwork",
    "MO_LONG_MODES",
    "OPTOUT_MT_ACTIONS",
    "OptoutConfig",
    "Limits",
    "Listener",
    "LOOPBACK_NETWORKS",
    "LoggingConfig",
    "PduLogConfig",
    "RECEIPT_STATS",
    "ReceiptMapping",
    "ReceiptsConfig",
    "RouteConfig",
    "SchedulerConfig",
    "Secret",
    "SmppConfig",
    "StoreConfig",
    "Timers",
    "TlsConfig",
    "default_demo_config",
    "load_config",
    "load_config_text",
]
