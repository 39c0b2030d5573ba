"""Plain HTTP on the WebSocket's port: the front door, its route table, and the routes
(health, metrics, the JSON API, the dashboard's files)."""
