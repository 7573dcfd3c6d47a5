"""Host inspection: which processes hold which module, files in use, versions, registry, reboot."""
