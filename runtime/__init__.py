"""hiergen.runtime"""
