"""Config validation and the config resolvers of graphgt (registered on import)."""
from graphgt.config.run_stamp import register as _register

_register()
