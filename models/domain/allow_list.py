"""A key's model allow-list: which models its requests may reach, and the router's choice
clamped into it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.errors import NotAllowed
from models.domain.params import refusals
from models.domain.request import TIER_POLICIES, ChatRequest
from models.domain.settings import RoutingSettings

#: Tier names an allow-list may hold besides model names.
TIERS: tuple[str, ...] = tuple(t for t in TIER_POLICIES if t != "auto")


def allowed_names(allowed: Sequence[str], routing: RoutingSettings) -> list[str]:
    """The model names an allow-list stands for (a tier stands for its configured model)."""
    names = [routing.model_for(a) if a in TIERS else a for a in allowed]
    return list(dict.fromkeys(names))


def may_use(request: Any, model: str, routing: RoutingSettings) -> bool:
    """Whether ``request``'s key (``allowed_models``, a chat or embedding request's) may have
    ``model`` answer it."""
    return request.allowed_models is None or model in allowed_names(request.allowed_models,
                                                                     routing)


def clamp(request: ChatRequest, chosen: ModelSpec, catalogue: Catalogue,
          routing: RoutingSettings) -> tuple[ModelSpec, str]:
    """``chosen`` when the key may use it, else the allowed model nearest in intent: for a
    flagship choice the dearest allowed model, otherwise the cheapest, among those that honour
    the request; ``(model, why)``. A named model outside the list is refused (NotAllowed)."""
    if may_use(request, chosen.name, routing):
        return chosen, ""
    assert request.allowed_models is not None
    listed = ", ".join(request.allowed_models)
    if request.model not in TIER_POLICIES:
        raise NotAllowed(f"this API key may not use model {request.model!r} (it may use "
                         f"{listed}); name one of those, or send model 'auto'", field="model",
                         model=request.model)
    models = [catalogue.models[n] for n in allowed_names(request.allowed_models, routing)
              if n in catalogue.models and catalogue.models[n].kind == "chat"]
    able = [m for m in models if not refusals(request, m)] or models
    if not able:
        raise NotAllowed(f"no model this API key may use ({listed}) is a chat model of this "
                         "deployment; ask an operator to fix the key (`sluice keys update`)",
                         field="model")
    dearest_first = chosen.tier == "flagship"
    pick = sorted(able, key=lambda m: (m.price.input + m.price.output, m.name),
                  reverse=dearest_first)[0]
    return pick, f"; clamped to the key's allow-list: {chosen.name} -> {pick.name}"


def clamp_embedding(request: Any, chosen: ModelSpec, catalogue: Catalogue,
                    routing: RoutingSettings) -> tuple[ModelSpec, str]:
    """:func:`clamp` for an embedding request: ``chosen`` when the key may use it; for
    ``auto``, the cheapest allowed embedding model that can answer the size asked
    (``(model, why)``); a named model outside the list is refused (NotAllowed)."""
    if may_use(request, chosen.name, routing):
        return chosen, ""
    listed = ", ".join(request.allowed_models)
    if request.model != "auto":
        raise NotAllowed(f"this API key may not use model {request.model!r} (it may use "
                         f"{listed}); name one of those, or send model 'auto'", field="model",
                         model=request.model)
    models = [catalogue.models[n] for n in allowed_names(request.allowed_models, routing)
              if n in catalogue.models and catalogue.models[n].embedding is not None]
    dims = request.dimensions
    able = [m for m in models if m.embedding is not None and (
        dims is None or dims == m.embedding.dimensions
        or (m.embedding.shortenable and dims < m.embedding.dimensions))] or models
    if not able:
        raise NotAllowed(f"no model this API key may use ({listed}) is an embedding model of "
                         "this deployment; ask an operator to fix the key (`sluice keys "
                         "update`)", field="model")
    pick = sorted(able, key=lambda m: (m.price.input, m.name))[0]
    return pick, f"; clamped to the key's allow-list: {chosen.name} -> {pick.name}"
