// The claims charts: the figures the server embedded in the page, drawn by Chart.js.
document.addEventListener("DOMContentLoaded", () => {
  const source = document.getElementById("claims-figures");
  if (!source || typeof Chart === "undefined") return;
  const f = JSON.parse(source.textContent);
  new Chart(document.getElementById("claims-volume"), {
    type: "bar",
    data: { labels: f.labels, datasets: [
      { label: "submitted", data: f.submitted },
      { label: "decided", data: f.decided },
    ] },
    options: { animation: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  new Chart(document.getElementById("claims-turnaround"), {
    type: "line",
    data: { labels: f.labels, datasets: [
      { label: "median (p50)", data: f.p50, spanGaps: true },
      { label: "p90", data: f.p90, spanGaps: true },
    ] },
    options: { animation: false, scales: { y: { beginAtZero: true, title: { display: true, text: "hours" } } } },
  });
  document.body.dataset.chartsReady = "true";
});
