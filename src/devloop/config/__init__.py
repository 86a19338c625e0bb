"""devloop.config"""
