"""devloop.core"""
