"""devloop.analytics"""
