"""One module per role; each exposes `async def run(rt: RoleRuntime, stop: asyncio.Event) -> None`."""
