const api = import.meta.env.VITE_API_URL ?? "http://localhost:8000";

fetch(`${api}/health`)
  .then((response) => response.json())
  .then((health) => {
    document.querySelector("#app")!.textContent = `API: ${health.status}`;
  });
