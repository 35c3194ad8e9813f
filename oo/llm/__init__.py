"""The LLM gateway: one LiteLLM Router whose aliases (``tip-generator``, ``embedder``, ``judge``)
come from one YAML file (``oo/llm/models.yaml`` by default, ``OO_LLM__CONFIG_PATH`` to swap).

- :mod:`oo.llm.gateway`: the Router built from the YAML and the ``OO_LLM__*`` settings.
- :mod:`oo.llm.offline`: the offline provider registered with LiteLLM (``oo-offline/...``): a
  template tip generator, a hashing embedder and a rule judge, so nothing needs a model server.
- :mod:`oo.llm.prompts`: the versioned tip prompts.

Importing LiteLLM fetches a remote cost map unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set, so the
package sets the offline switches of :mod:`oo.runtime` (as defaults) before any submodule imports it.
"""

from __future__ import annotations

import os

from oo.runtime import OFFLINE_SWITCHES

for _key in ("LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_TELEMETRY"):
    os.environ.setdefault(_key, OFFLINE_SWITCHES[_key])
