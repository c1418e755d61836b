"""An account's own data: erasing it (`DELETE /api/v1/me`) and exporting it
(`POST /api/v1/me/export`), each finished by a job."""
