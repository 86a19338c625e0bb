"""devloop.collector"""
