// sort any table with class "sortable" by clicking its header (numbers numerically)
document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],r=Array.from(b.rows),d=th.dataset.dir==='a'?-1:1;th.dataset.dir=d>0?'a':'d';
r.sort(function(x,y){var p=x.cells[i].dataset.v||x.cells[i].textContent,q=y.cells[i].dataset.v||y.cells[i].textContent,
m=parseFloat(p),n=parseFloat(q);return(!isNaN(m)&&!isNaN(n)?m-n:p.localeCompare(q))*d;});r.forEach(function(x){b.appendChild(x)});});});
