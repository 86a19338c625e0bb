"""devloop.store"""
