"""First-party components, each module a pluggy plugin registered like any third party's (the list
is ``dissectkit.host.manager.BUILTIN_PLUGINS``)."""
