"""devloop.runner"""
