from shigoto import Shigoto


async def test_insert_and_get(app: Shigoto, count_jobs) -> None:
    @app.worker
    async def hello(name: str) -> None: ...

    job = await hello.enqueue({"name": "x"})
    assert (await app.get_job(job.id)) == job
    assert await count_jobs() == 1
