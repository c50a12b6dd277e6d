"""crdtmds: an active/active configuration store for multi-domain security management.

Every server holds one Automerge document per domain, administrators edit private
sessions and publish, and servers gossip published changes over the automerge-repo
protocol so that they converge to identical state.
"""

__version__ = "0.1.0"
