"""Adapters: one module or package per backend; each implements the ports it supports.

Driver imports live inside their adapter, so ``import tidings`` never needs psycopg.
"""
