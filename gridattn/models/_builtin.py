"""The architectures that come with gridattn, registered in :mod:`gridattn.models.registry`."""

from __future__ import annotations

from . import dat, dat_layout, hat, hat_layout, hmanet, hmanet_layout, swinir, swinir_layout
from .registry import Architecture, register

register(Architecture(
    name="hmanet", title="HMANet", config_class=hmanet.HMANetConfig, model_class=hmanet.HMANet,
    presets={size: (lambda scale, size=size: hmanet.hmanet_config(scale, size)) for size in hmanet.PRESETS},
    layouts=hmanet_layout.LAYOUTS, infer_config=hmanet_layout.infer_config,
    choose_layout=hmanet_layout.choose_layout, migrate_own_keys=hmanet_layout.migrate_own_keys,
))
register(Architecture(
    name="swinir", title="SwinIR", config_class=swinir.SwinIRConfig, model_class=swinir.SwinIR,
    presets={size: (lambda scale, size=size: swinir.swinir_config(scale, size)) for size in swinir.PRESETS},
    layouts=swinir_layout.LAYOUTS, infer_config=swinir_layout.infer_config, flagship="classical",
))
register(Architecture(
    name="hat", title="HAT", config_class=hat.HATConfig, model_class=hat.HAT,
    presets={size: (lambda scale, size=size: hat.hat_config(scale, size)) for size in hat.PRESETS},
    layouts=hat_layout.LAYOUTS, infer_config=hat_layout.infer_config, flagship="hat",
))
register(Architecture(
    name="dat", title="DAT", config_class=dat.DATConfig, model_class=dat.DAT,
    presets={size: (lambda scale, size=size: dat.dat_config(scale, size)) for size in dat.PRESETS},
    layouts=dat_layout.LAYOUTS, infer_config=dat_layout.infer_config, flagship="dat",
))
