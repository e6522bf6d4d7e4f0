"""The plugin host: the component contract, the registry, the hook specifications, the plugin
manager and recipes."""
